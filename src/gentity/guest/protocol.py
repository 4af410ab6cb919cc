"""Wire protocol shared by the guest daemon and its client, and the daemon's config.

A connection starts with one JSON request line from the client and one JSON
response line from the guest. For ``attach`` and ``shell`` the connection then
carries binary frames in both directions: a 1-byte type, a 4-byte big-endian
payload length, then the payload.

The startup config (JSON on the daemon's stdin) is defined here too, so the
control plane that launches a guest and the guest itself share one schema.

This module is imported by the daemon, so it must only use the standard library.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from gentity.guest.seeds import PreparePlan, parse_prepare_plan

#: Longest accepted request line, newline included.
MAX_REQUEST_BYTES: Final = 64 * 1024
#: Largest frame payload; anything bigger is a protocol error.
MAX_FRAME_BYTES: Final = 1024 * 1024

#: Frame header: type byte + payload length.
HEADER: Final = struct.Struct(">cI")

# client -> guest
FRAME_INPUT: Final = b"i"
FRAME_RESIZE: Final = b"r"
# guest -> client
FRAME_OUTPUT: Final = b"o"
FRAME_EXIT: Final = b"x"

OP_HEALTH: Final = "health"
OP_ATTACH: Final = "attach"
OP_SHELL: Final = "shell"
OPS: Final = (OP_HEALTH, OP_ATTACH, OP_SHELL)

STATE_INSTALLING: Final = "installing"
STATE_STARTING: Final = "starting"
STATE_RUNNING: Final = "running"
STATE_EXITED: Final = "exited"
STATE_ERROR: Final = "error"

RESTART_POLICIES: Final = ("always", "on-failure", "never")

# The agent's own state, as health reports it under "agent" (the guest's state above says
# what the supervisor does; this says whether the agent can be worked with).
AGENT_INSTALLING: Final = "installing"
AGENT_STARTING: Final = "starting"
"""Its process runs, but its readiness rule has not held yet."""
AGENT_READY: Final = "ready"
"""Up and waiting for input: the readiness rule (quiet period, prompt pattern) held."""
AGENT_CRASHED: Final = "crashed"
"""It failed (install, start, or a failed exit) and will not be restarted."""
AGENT_BACKOFF: Final = "backoff"
"""It exited and the supervisor waits before restarting it."""
AGENT_EXITED: Final = "exited"
"""It exited cleanly and the restart policy does not bring it back."""
AGENT_STATES: Final = (
    AGENT_INSTALLING,
    AGENT_STARTING,
    AGENT_READY,
    AGENT_CRASHED,
    AGENT_BACKOFF,
    AGENT_EXITED,
)

#: Terminal sizes are clamped to this range.
MIN_SIZE: Final = 1
MAX_SIZE: Final = 1000


class ProtocolError(Exception):
    """The peer sent something that does not follow the wire protocol."""


@dataclass(frozen=True, slots=True)
class Output:
    """Terminal output bytes from the guest."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Exit:
    """The session's process ended; the guest closes the connection after this."""

    exit_code: int | None
    signal: str | None


@dataclass(frozen=True, slots=True)
class Address:
    """A parsed guest address: ``unix:/path``, ``tcp:host:port``, or ``fd:N`` (a listening
    socket the launcher bound and handed over, so the guest needs no writable socket path)."""

    kind: Literal["unix", "tcp", "fd"]
    path: str = ""
    host: str = ""
    port: int = 0
    fd: int = -1

    def __str__(self) -> str:
        if self.kind == "unix":
            return f"unix:{self.path}"
        if self.kind == "fd":
            return f"fd:{self.fd}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"tcp:{host}:{self.port}"


def parse_address(address: str) -> Address:
    """Parse ``unix:/abs/path``, ``tcp:host:port`` (IPv6 hosts in brackets) or ``fd:N``.

    Raises ValueError with a readable message on anything else.
    """
    kind, sep, rest = address.partition(":")
    if sep and kind == "unix":
        if not rest:
            raise ValueError(f"invalid address {address!r}: empty socket path")
        return Address("unix", path=rest)
    if sep and kind == "tcp":
        host, sep, port_text = rest.rpartition(":")
        host = host.removeprefix("[").removesuffix("]")
        if not sep or not host or not port_text.isdigit() or int(port_text) > 65535:
            raise ValueError(f"invalid address {address!r}: expected tcp:host:port")
        return Address("tcp", host=host, port=int(port_text))
    if sep and kind == "fd":
        if not (rest.isascii() and rest.isdigit()) or len(rest) > 6:
            raise ValueError(f"invalid address {address!r}: expected fd:N")
        return Address("fd", fd=int(rest))
    raise ValueError(f"invalid address {address!r}: expected unix:/path, tcp:host:port or fd:N")


def clamp_size(value: object) -> int | None:
    """Return a terminal dimension clamped to 1..1000, or None if not an integer."""
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return max(MIN_SIZE, min(MAX_SIZE, value))


def encode_frame(kind: bytes, payload: bytes) -> bytes:
    """Encode one frame. Raises ValueError if the payload exceeds MAX_FRAME_BYTES."""
    if len(payload) > MAX_FRAME_BYTES:
        raise ValueError(f"frame payload of {len(payload)} bytes exceeds {MAX_FRAME_BYTES}")
    return HEADER.pack(kind, len(payload)) + payload


def chunks(data: bytes, size: int = MAX_FRAME_BYTES) -> Iterator[bytes]:
    """Split data into pieces that each fit in one frame."""
    view = memoryview(data)
    for start in range(0, len(data), size):
        yield bytes(view[start : start + size])


def encode_resize(cols: int, rows: int) -> bytes:
    """Encode a client->guest resize frame."""
    return encode_frame(FRAME_RESIZE, json.dumps({"cols": cols, "rows": rows}).encode())


def decode_resize(payload: bytes) -> tuple[int, int] | None:
    """Decode a resize payload into clamped (cols, rows); None if it is invalid."""
    try:
        data = json.loads(payload)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    cols, rows = clamp_size(data.get("cols")), clamp_size(data.get("rows"))
    if cols is None or rows is None:
        return None
    return cols, rows


def encode_exit(exit_code: int | None, signal: str | None) -> bytes:
    """Encode a guest->client exit frame."""
    payload = json.dumps({"exitCode": exit_code, "signal": signal}).encode()
    return encode_frame(FRAME_EXIT, payload)


def decode_exit(payload: bytes) -> Exit:
    """Decode an exit payload. Raises ProtocolError if it is malformed."""
    try:
        data = json.loads(payload)
    except ValueError as exc:
        raise ProtocolError("malformed exit frame") from exc
    if not isinstance(data, dict):
        raise ProtocolError("malformed exit frame")
    code, sig = data.get("exitCode"), data.get("signal")
    if not (code is None or (isinstance(code, int) and not isinstance(code, bool))):
        raise ProtocolError("malformed exit frame: bad exitCode")
    if not (sig is None or isinstance(sig, str)):
        raise ProtocolError("malformed exit frame: bad signal")
    return Exit(code, sig)


def encode_line(obj: dict[str, Any]) -> bytes:
    """Encode a request or response object as one JSON line."""
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


def encode_request(
    secret: str, op: str, *, cols: int | None = None, rows: int | None = None
) -> bytes:
    """Encode the client's request line."""
    request: dict[str, Any] = {"secret": secret, "op": op}
    if cols is not None:
        request["cols"] = cols
    if rows is not None:
        request["rows"] = rows
    line = encode_line(request)
    if len(line) > MAX_REQUEST_BYTES:
        raise ValueError("request line too long")
    return line


async def read_frame(reader: asyncio.StreamReader) -> tuple[bytes, bytes] | None:
    """Read one frame as (type, payload).

    Returns None on a clean end of stream (EOF between frames). Raises
    ProtocolError on a truncated or oversized frame; connection errors propagate.
    """
    try:
        header = await reader.readexactly(HEADER.size)
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            return None
        raise ProtocolError("connection closed inside a frame header") from exc
    kind, length = HEADER.unpack(header)
    if length > MAX_FRAME_BYTES:
        raise ProtocolError(f"frame of {length} bytes exceeds the {MAX_FRAME_BYTES} limit")
    try:
        payload = await reader.readexactly(length) if length else b""
    except asyncio.IncompleteReadError as exc:
        raise ProtocolError("connection closed inside a frame") from exc
    return kind, payload


# ----- startup config (JSON object on the daemon's stdin) -----------------


class ConfigError(ValueError):
    """The startup config is invalid. Messages name fields, never values."""


@dataclass
class InstallPlan:
    """Commands to run once for everyone who shares ``marker``: whoever holds ``lock_file``
    runs them, the others wait and find the marker (see :mod:`gentity.guest.install`).
    ``env`` is added to the environment of the commands only, never to the agent's."""

    lock_file: str
    marker: str
    commands: list[list[str]]
    env: dict[str, str] = field(repr=False)


@dataclass(frozen=True)
class ReadyRule:
    """When the agent counts as ready: its output has been quiet for ``quiet_ms`` and, if
    ``pattern`` is set, its screen text (escape sequences removed) has matched it."""

    quiet_ms: int = 1000
    pattern: str | None = None


@dataclass
class Config:
    """Parsed daemon config; see :func:`parse_config` for the JSON field names."""

    secret: str = field(repr=False)
    listen: str
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
    hostname: str | None = None
    """Set as the hostname first (a guest started ahead of need learns its name late)."""
    child_cgroup_fd: int | None = None
    """An open ``cgroup.procs`` of a group below the guest's own: every child writes itself
    there, so a fork bomb in the agent hits that group's limit and leaves the guest room."""
    ready: ReadyRule = field(default_factory=ReadyRule)
    secret_env: list[str] = field(default_factory=list)
    """Names in ``env`` and ``install.env`` whose values are secrets (the model API key):
    the guest redacts them, and its own secret, from every log record it writes."""
    prepare: PreparePlan = field(default_factory=PreparePlan)
    """Seeded files and a repository, before the agent's first start (workdir is made)."""

    def secret_values(self) -> list[str]:
        """The values to keep out of the log: the guest secret and the named env values."""
        envs = [self.env, self.install.env if self.install is not None else {}]
        return [self.secret, *(env[n] for env in envs for n in self.secret_env if n in env)]


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


def parse_config(data: object) -> Config:
    """Validate the JSON config object (fields: secret, listen, logFile, workdir,
    command, shell, env, secretEnv, restart, install, replayBytes, cols, rows, hostname,
    childCgroupFd, ready: {quietMs, pattern}, prepare: see :mod:`gentity.guest.seeds`)."""
    if not isinstance(data, dict):
        raise ConfigError("config must be a JSON object")
    secret = data.get("secret")
    if not isinstance(secret, str) or not secret:
        raise ConfigError("secret must be a non-empty string")
    listen = data.get("listen")
    try:
        parse_address(listen if isinstance(listen, str) else "")
    except ValueError as exc:
        raise ConfigError(f"listen: {exc}") from None
    restart = data.get("restart", "always")
    if restart not in RESTART_POLICIES:
        raise ConfigError(f"restart must be one of {', '.join(RESTART_POLICIES)}")
    install = None
    raw_install = data.get("install")
    if raw_install is not None:
        if not isinstance(raw_install, dict):
            raise ConfigError("install must be an object or null")
        commands = raw_install.get("commands")
        if not isinstance(commands, list):
            raise ConfigError("install.commands must be a list of commands")
        install = InstallPlan(
            lock_file=_abs_path(raw_install, "lockFile"),
            marker=_abs_path(raw_install, "marker"),
            commands=[_str_list(c, "install.commands[]") for c in commands],
            env=_str_dict(raw_install.get("env"), "install.env"),
        )
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
        secret=secret,
        listen=str(listen),
        log_file=_abs_path(data, "logFile"),
        workdir=_abs_path(data, "workdir"),
        command=_str_list(data.get("command"), "command"),
        shell=_str_list(data.get("shell", ["sh"]), "shell"),
        env=_str_dict(data.get("env"), "env"),
        restart=str(restart),
        install=install,
        replay_bytes=numbers["replayBytes"],
        cols=numbers["cols"],
        rows=numbers["rows"],
        hostname=_hostname(data.get("hostname")),
        child_cgroup_fd=_optional_fd(data.get("childCgroupFd")),
        secret_env=_names(data.get("secretEnv")),
        ready=parse_ready_rule(data.get("ready")),
        prepare=_prepare(data.get("prepare")),
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
