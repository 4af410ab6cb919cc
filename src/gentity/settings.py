"""Gentity's settings: one typed object, read from ``GENTITY_*`` environment variables.

Every field here is documented in ``docs/configuration.md``; a test fails when one is not.
"""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

if TYPE_CHECKING:
    from gentity.server.db.database import DatabaseLimits


def default_data_dir() -> Path:
    """The per-user data directory: ``$XDG_DATA_HOME/gentity`` or ``~/.local/share/gentity``."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "gentity"


# Directories every instance needs to see (the key file's directory is hidden from them), and
# /tmp, where anyone may create files.
_SHARED_DIRECTORIES = frozenset(
    ("/", "/etc", "/usr", "/bin", "/sbin", "/lib", "/lib64", "/opt", "/var", "/srv", "/tmp")  # noqa: S108
)

# An entry point's name, as plugins register providers (``local``, ``fly``).
_PROVIDER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


class Settings(BaseSettings):
    """Everything the control plane can be configured with."""

    model_config = SettingsConfigDict(env_prefix="GENTITY_", extra="ignore", frozen=True)

    data_dir: Path = Field(default_factory=default_data_dir)
    """Where the SQLite database, the encryption key file and instance volumes live."""

    database_url: str | None = None
    """SQLAlchemy URL; ``postgresql://…`` for production. Empty means SQLite in ``data_dir``."""

    database_connect_timeout_seconds: float = Field(default=5.0, gt=0, le=300)
    """Seconds to open a new database connection (PostgreSQL) before answering 503."""
    database_statement_timeout_seconds: float = Field(default=15.0, gt=0, le=3600)
    """Seconds any one database call may take (waiting for a connection, a lock or an answer)
    before it fails and the request is answered 503."""
    database_pool_timeout_seconds: float = Field(default=5.0, gt=0, le=300)
    """Seconds a request waits for a free pooled connection before it is answered 503."""
    database_pool_size: int = Field(default=10, ge=1, le=1000)
    database_max_overflow: int = Field(default=10, ge=0, le=1000)
    """Connections opened past ``database_pool_size`` under load, closed again when idle."""

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)

    public_url: str | None = None
    """The URL users reach this server at (``https://gentity.example.com``).

    Used for the trusted origin of browser requests and the printed sign-in hint. When unset,
    the origin is taken from each request's own ``Host`` header and scheme.
    """

    trusted_proxies: str = ""
    """Comma-separated addresses or CIDR networks of reverse proxies (``10.0.0.5,10.1.0.0/16``)
    whose ``X-Forwarded-For`` and ``X-Forwarded-Proto`` headers are believed. Empty (the
    default) believes nobody: the client address and scheme are those of the connection."""

    allow_signup: bool = False
    """Let anyone create an account through the API. The first account can always be created."""

    secret_key: str | None = None
    """Base64 of 32 random bytes, the AES-GCM key for secrets stored in the database; several
    keys separated by commas form a keyring, newest first.

    When unset, the keys come from ``secret_key_file``.
    """

    secret_key_file: Path | None = None
    """The key file: base64 keys, one a line, newest first. ``<data_dir>/secret.key`` when
    unset; a key is generated into it on first start (mode 0600).
    ``gentity secrets rotate`` rewrites it."""

    session_ttl_hours: int = Field(default=24 * 14, ge=1)
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    max_upload_bytes: int = Field(default=1024**3, ge=1024)
    """Largest file ``PUT /api/instances/<id>/files`` accepts (it streams to the instance, so
    the server never holds it); larger uploads get 413."""

    preview_max_connections: int = Field(default=256, ge=1, le=100_000)
    """Concurrent preview requests and WebSockets relayed to one instance (per server
    process); past it a preview answers 503."""

    login_max_failures_per_account: int = Field(default=5, ge=1)
    """Failed sign-ins per (account, address) before that pair gets 429; past as many on the
    account from all addresses, sign-ins on it are slowed down (never locked)."""
    login_max_failures_per_address: int = Field(default=20, ge=1)
    login_failure_window_seconds: int = Field(default=15 * 60, ge=1)

    compute_provider: str = "local"
    """Which compute provider runs new instances (``local``, or one a plugin installed)."""

    compute_providers: str = ""
    """Other compute providers this server also runs, comma-separated (``fly``), so that it
    serves instances that were made by them. Each reads its own ``GENTITY_<NAME>_*`` settings
    (e.g. ``GENTITY_LOCAL_WARM_SPARES``; see ``providers/compute/registry.py``)."""

    dns_provider: str = "none"
    """Which DNS provider gives instances their subdomain records (``none``, ``cloudflare``)."""

    base_domain: str | None = None
    """The domain instance subdomains hang off (``cl-x7k2m9.<base domain>``); by default the
    host of ``public_url``. Only DNS records use it: locally ``*.localhost`` needs none."""
    dns_target: str | None = None
    """Where instance records point: a host name (a ``CNAME``) or an address (``A``/``AAAA``);
    by default the base domain itself, i.e. the control plane that serves every subdomain."""

    cloudflare_api_url: str = "https://api.cloudflare.com/client/v4"
    cloudflare_api_token: SecretStr | None = None
    """A Cloudflare API token with Zone > DNS > Edit on the zone. A secret: never logged."""
    cloudflare_zone_id: str | None = None
    """The id (32 hex digits) of the Cloudflare zone instance records are made in."""

    metrics_token: SecretStr | None = Field(default=None, min_length=16)
    """Serve Prometheus metrics at ``/metrics`` to requests bearing this token (at least 16
    characters); unset, ``/metrics`` does not exist. A secret: never logged."""

    allow_file_repos: bool = False
    """Also accept ``file://`` repository URLs at create (for tests: a repository on the
    machine that runs the instance). Off, only ``https://`` is accepted."""

    reconcile_interval_seconds: float = Field(default=15.0, gt=0)

    auto_stop_minutes: int = Field(default=0, ge=0, le=10080)
    """The ``autoStopMinutes`` of an instance created without one: stop it after that many
    minutes without activity (0, the default, never stops it; at most 10080, a week)."""
    auto_stop_check_seconds: float = Field(default=60.0, gt=0, le=3600)
    """How often running instances are checked for idleness: an idle instance stops within
    this long after its ``autoStopAt``."""
    auto_stop_minute_seconds: float = Field(default=60.0, gt=0, le=60)
    """How many seconds an auto-stop "minute" lasts. For tests, which cannot wait minutes;
    leave it at 60 anywhere else."""
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @field_validator("compute_provider")
    @classmethod
    def _provider_name(cls, value: str) -> str:
        if not _PROVIDER_NAME.fullmatch(value):
            raise ValueError(f"{value!r} is not a compute provider name")
        return value

    @field_validator("compute_providers")
    @classmethod
    def _provider_names(cls, value: str) -> str:
        for name in value.split(","):
            if name.strip():
                cls._provider_name(name.strip())
        return value

    @property
    def enabled_compute_providers(self) -> list[str]:
        """The default compute provider, then the other enabled ones, each once."""
        names = [self.compute_provider, *(n.strip() for n in self.compute_providers.split(","))]
        return list(dict.fromkeys(n for n in names if n))

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: str) -> str:
        for part in value.split(","):
            if part.strip():
                ipaddress.ip_network(part.strip(), strict=False)  # ValueError names the entry
        return value

    @property
    def trusted_proxy_networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        return tuple(
            ipaddress.ip_network(part.strip(), strict=False)
            for part in self.trusted_proxies.split(",")
            if part.strip()
        )

    @property
    def instance_domain(self) -> str | None:
        """The domain instance subdomains hang off, if this deployment has one."""
        if self.base_domain:
            return self.base_domain.strip().rstrip(".").lower() or None
        return urlsplit(self.public_url).hostname if self.public_url else None

    @property
    def secure_public_url(self) -> bool:
        """Whether users reach this server over https (then cookies are Secure, HSTS is sent)."""
        return (self.public_url or "").lower().startswith("https://")

    @field_validator("data_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @field_validator("secret_key_file")
    @classmethod
    def _key_file(cls, value: Path | None) -> Path | None:
        if value is None:
            return None
        value = value.expanduser().absolute()
        # Instances cannot see the key file's directory: it must not be one they need.
        if str(value.parent) in _SHARED_DIRECTORIES:
            raise ValueError(
                f"the key file must be in a directory of its own, not {value.parent} "
                "(e.g. /etc/gentity/secret.key)"
            )
        return value

    @property
    def resolved_secret_key_file(self) -> Path:
        """The key file in use (whether or not ``secret_key`` overrides it)."""
        return self.secret_key_file or self.data_dir / "secret.key"

    @property
    def database_limits(self) -> DatabaseLimits:
        from gentity.server.db.database import DatabaseLimits

        return DatabaseLimits(
            connect_timeout=self.database_connect_timeout_seconds,
            statement_timeout=self.database_statement_timeout_seconds,
            pool_timeout=self.database_pool_timeout_seconds,
            pool_size=self.database_pool_size,
            max_overflow=self.database_max_overflow,
        )

    @property
    def resolved_database_url(self) -> str:
        """The async SQLAlchemy URL: drivers filled in, SQLite in ``data_dir`` by default."""
        url = self.database_url or f"sqlite:///{self.data_dir / 'gentity.db'}"
        for plain, driver in (
            ("postgresql://", "postgresql+psycopg://"),
            ("postgres://", "postgresql+psycopg://"),
            ("sqlite://", "sqlite+aiosqlite://"),
        ):
            if url.startswith(plain):
                return driver + url[len(plain) :]
        return url
