"""What a guest daemon is told: its bootstrap at boot, then its config over the protocol.

The *bootstrap* holds no secret: where to listen, the sha256 of the guest secret (the guest
compares ``sha256(request.secret)`` with it), and for the ``local`` provider the children's
cgroup and the hostname. The local provider writes it as JSON to the daemon's stdin; other
providers set ``GENTITY_GUEST_LISTEN``, ``GENTITY_GUEST_SECRET_SHA256`` and
``GENTITY_GUEST_ECHO_LOG`` in the machine's environment, which a provider's API may show back.

The *config* (command, env with the model API key, install, log file…) arrives later in the
``configure`` request, over the authenticated channel only. Both schemas are defined here so
the control plane and the guest share them. Standard library only.
"""

from __future__ import annotations

import os
import re
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from gentity.guest.protocol import parse_address
from gentity.guest.seeds import PreparePlan, parse_prepare_plan

RESTART_POLICIES: Final = ("always", "on-failure", "never")

ENV_LISTEN: Final = "GENTITY_GUEST_LISTEN"
ENV_SECRET_SHA256: Final = "GENTITY_GUEST_SECRET_SHA256"  # noqa: S105 (a name)
ENV_ECHO_LOG: Final = "GENTITY_GUEST_ECHO_LOG"


class ConfigError(ValueError):
    """The bootstrap or config is invalid. Messages name fields, never values."""


@dataclass(frozen=True)
class Bootstrap:
    """How the daemon starts: nothing in here is a secret."""

    listen: str
    secret_sha256: bytes
    """The sha256 digest (raw bytes) of the guest secret."""
    hostname: str | None = None
    """Set as the hostname first (a guest started ahead of need learns its name late)."""
    child_cgroup_fd: int | None = None
    """An open ``cgroup.procs`` of a group below the guest's own: every child writes itself
    there, so a fork bomb in the agent hits that group's limit and leaves the guest room."""
    echo_log: bool = False
    """Also write every log record as one JSON line to stdout (a cloud machine's console,
    which its provider keeps and serves after the machine stopped)."""


def parse_bootstrap(data: object) -> Bootstrap:
    """Validate the bootstrap object (fields: listen, secretSha256, hostname, childCgroupFd,
    echoLog)."""
    if not isinstance(data, dict):
        raise ConfigError("bootstrap must be a JSON object")
    listen = data.get("listen")
    try:
        address = parse_address(listen if isinstance(listen, str) else "")
    except ValueError as exc:
        raise ConfigError(f"listen: {exc}") from None
    if address.kind == "tls":
        raise ConfigError("listen: the guest does not terminate TLS; use tcp:host:port")
    digest = data.get("secretSha256")
    if not (isinstance(digest, str) and len(digest) == 64 and set(digest) <= set(string.hexdigits)):
        raise ConfigError("secretSha256 must be 64 hexadecimal digits")
    echo = data.get("echoLog", False)
    if not isinstance(echo, bool):
        raise ConfigError("echoLog must be true or false")
    return Bootstrap(
        listen=str(listen),
        secret_sha256=bytes.fromhex(digest),
        hostname=_hostname(data.get("hostname")),
        child_cgroup_fd=_optional_fd(data.get("childCgroupFd")),
        echo_log=echo,
    )


def bootstrap_from_env(env: Mapping[str, str]) -> Bootstrap | None:
    """The bootstrap from ``GENTITY_GUEST_*`` variables; None when ``GENTITY_GUEST_LISTEN``
    is not set (then it comes on stdin)."""
    if ENV_LISTEN not in env:
        return None
    echo = env.get(ENV_ECHO_LOG, "")
    if echo not in ("", "0", "1", "true", "false"):
        raise ConfigError(f"{ENV_ECHO_LOG} must be 1 or 0")
    return parse_bootstrap(
        {
            "listen": env[ENV_LISTEN],
            "secretSha256": env.get(ENV_SECRET_SHA256),
            "echoLog": echo in ("1", "true"),
        }
    )


@dataclass
class InstallPlan:
    """Commands to run once for everyone who shares ``marker``: whoever holds ``lock_file``
    runs them, the others wait and find the marker (see :mod:`gentity.guest.install`).
    ``env`` is added to the environment of the commands only, never to the agent's."""

    lock_file: str
    marker: str
    commands: list[list[str]]
    env: dict[str, str] = field(repr=False)
    package: str = ""
    """What is being installed, for the health's progress report (e.g. an npm package)."""


@dataclass(frozen=True)
class ReadyRule:
    """When the agent counts as ready: its output has been quiet for ``quiet_ms`` and, if
    ``pattern`` is set, its screen text (escape sequences removed) has matched it."""

    quiet_ms: int = 1000
    pattern: str | None = None


@dataclass
class Config:
    """The agent's config from ``configure``; see :func:`parse_config` for the JSON names."""

    log_file: str
    workdir: str
    command: list[str]
    shell: list[str]
    env: dict[str, str] = field(repr=False)
    restart: str = "always"
    install: InstallPlan | None = None
    replay_bytes: int = 262144
    cols: int = 120
    rows: int = 32
    ready: ReadyRule = field(default_factory=ReadyRule)
    secret_env: list[str] = field(default_factory=list)
    """Names in ``env`` and ``install.env`` whose values are secrets (the model API key):
    the guest redacts them, and its own secret, from every log record it writes."""
    prepare: PreparePlan = field(default_factory=PreparePlan)
    """Seeded files and a repository, before the agent's first start (workdir is made)."""
    root: str = ""
    """The volume's root (the agent's home): the file ops reach nothing outside it. Empty
    (a config from before it existed): the working directory."""

    @property
    def volume_root(self) -> str:
        return self.root or self.workdir

    def secret_values(self) -> list[str]:
        """The env values named in ``secretEnv``, which the log must never show."""
        envs = [self.env, self.install.env if self.install is not None else {}]
        return [env[n] for env in envs for n in self.secret_env if n in env]


def parse_config(data: object) -> Config:
    """Validate the ``configure`` config object (fields: logFile, workdir, command, shell,
    env, secretEnv, restart, install: {lockFile, marker, commands, env, package},
    replayBytes, cols, rows, ready: {quietMs, pattern}, prepare: see
    :mod:`gentity.guest.seeds`, root: the volume's root for the file ops)."""
    if not isinstance(data, dict):
        raise ConfigError("config must be a JSON object")
    restart = data.get("restart", "always")
    if restart not in RESTART_POLICIES:
        raise ConfigError(f"restart must be one of {', '.join(RESTART_POLICIES)}")
    numbers: dict[str, int] = {}
    for key, default, low, high in (
        ("replayBytes", 262144, 65536, 1 << 30),
        ("cols", 120, 1, 1000),
        ("rows", 32, 1, 1000),
    ):
        value = data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be an integer")
        numbers[key] = max(low, min(high, value))
    return Config(
        log_file=_abs_path(data, "logFile"),
        workdir=_abs_path(data, "workdir"),
        command=_str_list(data.get("command"), "command"),
        shell=_str_list(data.get("shell", ["sh"]), "shell"),
        env=_str_dict(data.get("env"), "env"),
        restart=str(restart),
        install=_install(data.get("install")),
        replay_bytes=numbers["replayBytes"],
        cols=numbers["cols"],
        rows=numbers["rows"],
        secret_env=_names(data.get("secretEnv")),
        ready=parse_ready_rule(data.get("ready")),
        prepare=_prepare(data.get("prepare")),
        root=_abs_path(data, "root") if data.get("root") is not None else "",
    )


def _prepare(value: object) -> PreparePlan:
    try:
        return parse_prepare_plan(value)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def parse_ready_rule(value: object) -> ReadyRule:
    """Validate a ``ready`` object (``{"quietMs", "pattern"}``, both optional; None for the
    defaults). Shared with the catalog, which gives each agent its rule."""
    if value is None:
        return ReadyRule()
    if not isinstance(value, dict):
        raise ConfigError("ready must be an object")
    quiet = value.get("quietMs", 1000)
    if isinstance(quiet, bool) or not isinstance(quiet, int) or not 0 <= quiet <= 600_000:
        raise ConfigError("ready.quietMs must be an integer from 0 to 600000")
    pattern = value.get("pattern")
    if pattern is not None:
        if not isinstance(pattern, str) or not pattern:
            raise ConfigError("ready.pattern must be a non-empty string or null")
        try:
            re.compile(pattern)
        except re.error:
            raise ConfigError("ready.pattern is not a valid regular expression") from None
    return ReadyRule(quiet_ms=quiet, pattern=pattern)


def _install(value: object) -> InstallPlan | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ConfigError("install must be an object or null")
    commands = value.get("commands")
    if not isinstance(commands, list):
        raise ConfigError("install.commands must be a list of commands")
    package = value.get("package", "")
    if not isinstance(package, str):
        raise ConfigError("install.package must be a string")
    return InstallPlan(
        lock_file=_abs_path(value, "lockFile"),
        marker=_abs_path(value, "marker"),
        commands=[_str_list(c, "install.commands[]") for c in commands],
        env=_str_dict(value.get("env"), "install.env"),
        package=package,
    )


def _str_list(value: object, name: str) -> list[str]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{name} must be a non-empty list of strings")
    return list(value)


def _str_dict(value: object, name: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise ConfigError(f"{name} must be an object of string values")
    return dict(value)


def _abs_path(data: dict[str, Any], name: str) -> str:
    value = data.get(name)
    if not isinstance(value, str) or not os.path.isabs(value):
        raise ConfigError(f"{name} must be an absolute path")
    return value


def _optional_fd(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 3 <= value < 1 << 20:
        raise ConfigError("childCgroupFd must be a file descriptor number")
    return value


def _names(value: object) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError("secretEnv must be a list of strings")
    return list(value)


def _hostname(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not 0 < len(value) <= 63:
        raise ConfigError("hostname must be a string of 1 to 63 characters")
    return value
