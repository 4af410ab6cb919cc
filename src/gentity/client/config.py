"""Where the SDK and the CLI find the control plane and the API token.

Resolution order, first hit wins:

* API URL: explicit argument, ``GENTITY_API_URL``, the saved configuration, ``DEFAULT_URL``.
* Token: explicit argument, ``GENTITY_TOKEN``, the saved configuration, but the saved token
  only when the URL in use is the saved URL, so a token is never sent to a server it was not
  minted for.

The saved configuration is ``$XDG_CONFIG_HOME/gentity/config.json`` (``~/.config/...`` when
the variable is unset): ``{"url": ..., "token": ...}``, mode 0600 in a 0700 directory.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

DEFAULT_URL = "http://127.0.0.1:8080"
URL_ENV = "GENTITY_API_URL"
TOKEN_ENV = "GENTITY_TOKEN"  # noqa: S105 (a variable name, not a secret)

_LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")


class ConfigError(Exception):
    """The saved configuration cannot be read, or a URL makes no sense."""


@dataclass(frozen=True)
class SavedConfig:
    """What ``gentity login`` remembers."""

    url: str | None = None
    token: str | None = None


def config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "gentity" / "config.json"


def load_config(path: Path | None = None) -> SavedConfig:
    path = path or config_path()
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return SavedConfig()
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"cannot read {path}: not a JSON object")
    url, token = raw.get("url"), raw.get("token")
    return SavedConfig(
        url=url if isinstance(url, str) and url else None,
        token=token if isinstance(token, str) and token else None,
    )


def save_config(config: SavedConfig, path: Path | None = None) -> Path:
    """Write ``config`` atomically with mode 0600.

    The file is created 0600 from the first byte (``os.open`` with a mode, not chmod after
    the fact) under a random name, then renamed over the old one, so no reader ever sees a
    world-readable or half-written token, whatever the umask.
    """
    path = path or config_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    data = {k: v for k, v in (("url", config.url), ("token", config.token)) if v is not None}
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def normalize_url(url: str) -> str:
    """``example.com`` → ``https://example.com``; ``localhost:8080`` → ``http://...``.

    A bare host gets https, except loopback names, which get http (that is what
    ``gentity serve`` listens on). Trailing slashes go.
    """
    url = url.strip()
    if not url:
        raise ConfigError("empty API URL")
    if "://" not in url:
        host = urlsplit(f"//{url}").hostname
        url = f"{'http' if host in _LOCAL_HOSTS else 'https'}://{url}"
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"not an http(s) URL: {url}")
    return url.rstrip("/")


def resolve_base_url(explicit: str | None = None, config: SavedConfig | None = None) -> str:
    if explicit:
        return normalize_url(explicit)
    if os.environ.get(URL_ENV):
        return normalize_url(os.environ[URL_ENV])
    config = config if config is not None else load_config()
    return normalize_url(config.url) if config.url else DEFAULT_URL


def resolve_token(
    explicit: str | None, base_url: str, config: SavedConfig | None = None
) -> str | None:
    if explicit:
        return explicit
    if os.environ.get(TOKEN_ENV):
        return os.environ[TOKEN_ENV]
    config = config if config is not None else load_config()
    if config.token and config.url and normalize_url(config.url) == base_url:
        return config.token
    return None
