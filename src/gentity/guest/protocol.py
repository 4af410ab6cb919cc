"""Wire protocol shared by the guest daemon and its client.

A connection starts with one JSON request line from the client (``{"secret", "op", ...}``)
and one JSON response line from the guest (``{"ok": true, ...}`` or ``{"ok": false,
"error"}``). Then, for ``attach`` and ``shell``, the connection carries binary frames in
both directions: a 1-byte type, a 4-byte big-endian payload length, then the payload; for
``follow`` the guest sends one JSON line per log record (``{"cursor", "record"}``) until
the client closes; for ``exec`` see :func:`encode_exec_exit` and the frames below. For
``file_get`` of a file the guest then sends the file's bytes as data frames and an end
frame; for ``file_put`` the client sends them, and after its end frame the guest answers a
second JSON line (see :mod:`gentity.guest.fileserve`); for ``connect`` the connection then
carries the raw bytes of a TCP connection to a port inside the instance. Every other op is
one request and one response.

Until it is configured (op ``configure``, see :mod:`gentity.guest.config`) a guest answers
``health`` and ``configure`` only.

This module is imported by the daemon, so it must only use the standard library.
"""

from __future__ import annotations

import asyncio
import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final, Literal

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
# files, both ways: a file's bytes, then an empty end frame once all of them were sent
FRAME_DATA: Final = b"d"
FRAME_END: Final = b"e"

OP_HEALTH: Final = "health"
OP_CONFIGURE: Final = "configure"
OP_ATTACH: Final = "attach"
OP_SHELL: Final = "shell"
OP_LOGS: Final = "logs"
OP_FOLLOW: Final = "follow"
OP_WAIT: Final = "wait"
OP_EXEC: Final = "exec"
OP_FILE_GET: Final = "file_get"
OP_FILE_PUT: Final = "file_put"
OP_FILE_DELETE: Final = "file_delete"
FILE_OPS: Final = (OP_FILE_GET, OP_FILE_PUT, OP_FILE_DELETE)
OP_PORTS: Final = "ports"
"""The TCP ports something listens on inside the instance (the guest's own left out)."""
OP_CONNECT: Final = "connect"
"""Open a TCP connection to ``port`` inside the instance, then carry raw bytes both ways."""
OPS: Final = (
    OP_HEALTH,
    OP_CONFIGURE,
    OP_ATTACH,
    OP_SHELL,
    OP_LOGS,
    OP_FOLLOW,
    OP_WAIT,
    OP_EXEC,
    *FILE_OPS,
    OP_PORTS,
    OP_CONNECT,
)

#: The longest ``wait`` the guest accepts, in seconds.
MAX_WAIT: Final = 60.0
#: The most records one ``logs`` or ``follow`` request may ask for.
MAX_LOG_LINES: Final = 10_000

STATE_INSTALLING: Final = "installing"
STATE_STARTING: Final = "starting"
STATE_RUNNING: Final = "running"
STATE_EXITED: Final = "exited"
STATE_ERROR: Final = "error"
STATE_UNCONFIGURED: Final = "unconfigured"
"""Booted, but waiting for its ``configure`` request."""

INSTALL_RUNNING: Final = "running"
INSTALL_DONE: Final = "done"
INSTALL_FAILED: Final = "failed"

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
    """A parsed guest address: ``unix:/path``, ``tcp:host:port``, ``fd:N`` (a listening
    socket the launcher bound and handed over, so the guest needs no writable socket path), or
    ``tls:host:port#name`` (TCP through a proxy that terminates TLS in front of the guest;
    ``name`` is the server name to verify, the host when omitted). Only clients use ``tls``."""

    kind: Literal["unix", "tcp", "fd", "tls"]
    path: str = ""
    host: str = ""
    port: int = 0
    fd: int = -1
    server_name: str = ""

    def __str__(self) -> str:
        if self.kind == "unix":
            return f"unix:{self.path}"
        if self.kind == "fd":
            return f"fd:{self.fd}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        name = f"#{self.server_name}" if self.server_name else ""
        return f"{self.kind}:{host}:{self.port}{name}"


def parse_address(address: str) -> Address:
    """Parse ``unix:/abs/path``, ``tcp:host:port`` (IPv6 hosts in brackets), ``fd:N`` or
    ``tls:host:port`` with an optional ``#server-name``.

    Raises ValueError with a readable message on anything else.
    """
    kind, sep, rest = address.partition(":")
    if sep and kind == "unix":
        if not rest:
            raise ValueError(f"invalid address {address!r}: empty socket path")
        return Address("unix", path=rest)
    if sep and kind in ("tcp", "tls"):
        rest, _, name = rest.partition("#") if kind == "tls" else (rest, "", "")
        host, sep, port_text = rest.rpartition(":")
        host = host.removeprefix("[").removesuffix("]")
        if not sep or not host or not port_text.isdigit() or int(port_text) > 65535:
            raise ValueError(f"invalid address {address!r}: expected {kind}:host:port")
        return Address(kind, host=host, port=int(port_text), server_name=name)  # type: ignore[arg-type]
    if sep and kind == "fd":
        if not (rest.isascii() and rest.isdigit()) or len(rest) > 6:
            raise ValueError(f"invalid address {address!r}: expected fd:N")
        return Address("fd", fd=int(rest))
    raise ValueError(
        f"invalid address {address!r}: expected unix:/path, tcp:host:port, tls:host:port or fd:N"
    )


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


def encode_request(secret: str, op: str, fields: dict[str, Any] | None = None) -> bytes:
    """Encode the client's request line: the secret, the op and the op's own fields
    (those whose value is None are left out)."""
    request: dict[str, Any] = {"secret": secret, "op": op}
    request.update((k, v) for k, v in (fields or {}).items() if v is not None)
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


# --- exec -----------------------------------------------------------------------------------
# ``exec`` runs a command beside the agent on pipes. The request carries ``command``, ``cwd``,
# ``env``, ``timeout`` and ``maxOutput``; the answer is ``{"ok": true, "pid"}`` once it runs,
# or a refusal whose ``reason`` is ``invalid`` (it cannot start as asked) or ``busy``. Then the
# client sends its stdin as input frames and one close-stdin frame; the guest sends stdout
# (``o``) and stderr (``e``) frames, each stream cut at ``maxOutput`` bytes (the rest is read and
# dropped), and last an exit frame (``x``, see :func:`encode_exec_exit`). A client that closes
# the connection before the exit frame kills the command's process tree.

# client -> guest
FRAME_CLOSE_STDIN: Final = b"c"
# guest -> client (stdout uses FRAME_OUTPUT)
FRAME_STDERR: Final = b"e"

#: An ``exec`` timeout when none is given and the longest, in seconds; the most output kept
#: of each stream.
DEFAULT_EXEC_TIMEOUT: Final = 60.0
MAX_EXEC_TIMEOUT: Final = 3600.0
MAX_EXEC_OUTPUT: Final = 16 * 1024 * 1024
#: Commands one guest runs at once; more are refused (reason ``busy``).
MAX_EXECS: Final = 32

REFUSED_INVALID: Final = "invalid"
REFUSED_BUSY: Final = "busy"


@dataclass(frozen=True, slots=True)
class ExecExit:
    """How an ``exec`` command ended."""

    exit_code: int | None
    signal: str | None
    timed_out: bool
    stdout_truncated: bool
    stderr_truncated: bool


def encode_exec_exit(end: ExecExit) -> bytes:
    """Encode the guest->client exit frame of an ``exec``."""
    payload = {
        "exitCode": end.exit_code,
        "signal": end.signal,
        "timedOut": end.timed_out,
        "stdoutTruncated": end.stdout_truncated,
        "stderrTruncated": end.stderr_truncated,
    }
    return encode_frame(FRAME_EXIT, json.dumps(payload).encode())


def decode_exec_exit(payload: bytes) -> ExecExit:
    """Decode an ``exec`` exit payload. Raises ProtocolError if it is malformed."""
    base = decode_exit(payload)
    data = json.loads(payload)
    flags = [data.get(k, False) for k in ("timedOut", "stdoutTruncated", "stderrTruncated")]
    if not all(isinstance(f, bool) for f in flags):
        raise ProtocolError("malformed exit frame: bad flags")
    return ExecExit(base.exit_code, base.signal, *flags)
