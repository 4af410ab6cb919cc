"""Asyncio client for the guest daemon, used by the control plane.

Every call takes where the guest is: a :class:`GuestEndpoint` (as a provider's
``guest_endpoint`` hands it out) or a bare address string.

>>> await configure(endpoint, secret, config)  # after every boot
>>> info = await health(endpoint, secret)
>>> info = await wait(endpoint, secret, since=info["version"], timeout=30)
>>> records, cursor = await logs(endpoint, secret, lines=100)
>>> async for cursor, record in await follow(endpoint, secret, cursor=cursor):
...     ...
>>> await ports(endpoint, secret)  # [3000, 5173]
>>> reader, writer = await open_port(endpoint, secret, 3000)  # raw TCP to it, via the guest
>>> async with await open_session(endpoint, secret, cols=120, rows=32) as s:
...     await s.send_input(b"ls\\n")
...     while (event := await s.read()) is not None:
...         ...  # Output(data) or Exit(exit_code, signal)
>>> async with await open_exec(endpoint, secret, ["sh", "-c", "ls"], stdin=b"") as e:
...     while (event := await e.read()) is not None:
...         ...  # ExecOutput(stream, data) or ExecExit(...)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import types
from collections.abc import AsyncGenerator, AsyncIterable
from dataclasses import dataclass
from typing import Any, Final, Literal, Self, TypeGuard

from gentity.guest import protocol as p
from gentity.guest.protocol import ExecExit, Exit, Output

__all__ = [
    "ExecExit",
    "ExecOutput",
    "Exit",
    "GuestEndpoint",
    "GuestError",
    "GuestExec",
    "GuestRefused",
    "GuestSession",
    "Output",
    "configure",
    "delete_file",
    "follow",
    "follow_batches",
    "get_file",
    "health",
    "logs",
    "open_exec",
    "open_port",
    "open_session",
    "ports",
    "put_file",
    "wait",
]

#: The longest ``logs`` answer accepted from a guest: it holds many records.
MAX_LOGS_BYTES: Final = 64 * 1024 * 1024
#: The longest line of a ``follow`` stream (one record; the guest skips longer lines).
MAX_FOLLOW_LINE: Final = 2 * 1024 * 1024


class GuestError(Exception):
    """Talking to the guest failed: unreachable, timeout, unauthorized, refused
    request or protocol error. The message says which, in plain words."""


class GuestRefused(GuestError):
    """The guest refused a request and said why in ``reason``: ``invalid`` (it cannot be done
    as asked), ``busy`` (``exec``: too many commands running), ``missing`` or ``conflict`` (the
    file ops). The message is about the request only (no address)."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class GuestEndpoint:
    """Where the control plane reaches a guest: an address (``unix:``, ``tcp:`` or
    ``tls:host:port#server-name``) and, for ``tls``, the context that verifies the proxy in
    front of the guest (None: the system's trusted CAs)."""

    address: str
    tls: ssl.SSLContext | None = None


def _endpoint(where: GuestEndpoint | str) -> GuestEndpoint:
    return where if isinstance(where, GuestEndpoint) else GuestEndpoint(where)


async def _connect(
    endpoint: GuestEndpoint, seconds: float, limit: int
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    # ``limit`` caps what the reader buffers: small for terminals, so a client that stops
    # reading pushes back on the guest (which then drops it) instead of piling up here.
    address = endpoint.address
    try:
        addr = p.parse_address(address)
    except ValueError as exc:
        raise GuestError(str(exc)) from None
    if addr.kind == "fd":
        raise GuestError(f"cannot connect to {address}: a descriptor is the guest's own")
    try:
        async with asyncio.timeout(seconds):
            if addr.kind == "unix":
                return await asyncio.open_unix_connection(addr.path, limit=limit)
            if addr.kind == "tcp":
                return await asyncio.open_connection(addr.host, addr.port, limit=limit)
            return await asyncio.open_connection(
                addr.host,
                addr.port,
                limit=limit,
                ssl=endpoint.tls or ssl.create_default_context(),
                server_hostname=addr.server_name or addr.host,
            )
    except TimeoutError:
        raise GuestError(f"timed out connecting to the guest at {address}") from None
    except FileNotFoundError:
        raise GuestError(f"guest not reachable at {address}: socket does not exist") from None
    except ConnectionRefusedError:
        raise GuestError(f"guest not reachable at {address}: connection refused") from None
    except ssl.SSLError as exc:
        raise GuestError(f"TLS to the guest at {address} failed: {exc.reason or exc}") from None
    except OSError as exc:
        raise GuestError(f"guest not reachable at {address}: {exc.strerror or exc}") from None


async def _request(
    where: GuestEndpoint | str,
    secret: str,
    op: str,
    fields: dict[str, Any] | None,
    seconds: float,
    limit: int = p.MAX_REQUEST_BYTES,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, dict[str, Any]]:
    """Connect, send the request line and read the guest's answer."""
    endpoint = _endpoint(where)
    address = endpoint.address
    reader, writer = await _connect(endpoint, seconds, limit)
    try:
        async with asyncio.timeout(seconds):
            writer.write(p.encode_request(secret, op, fields))
            await writer.drain()
            line = await reader.readline()
    except TimeoutError:
        writer.close()
        raise GuestError(f"timed out waiting for the guest at {address} to answer") from None
    except (OSError, ValueError) as exc:
        writer.close()
        raise GuestError(f"connection to the guest at {address} failed: {exc}") from None
    try:
        response = json.loads(line)
        if not isinstance(response, dict):
            raise ValueError
    except ValueError:
        writer.close()
        if not line:
            raise GuestError(f"the guest at {address} closed the connection") from None
        raise GuestError(f"the guest at {address} sent an invalid response") from None
    if response.get("ok") is not True:
        writer.close()
        error = response.get("error") or "request refused"
        reason = response.get("reason")
        if isinstance(reason, str):
            raise GuestRefused(str(error), reason)
        raise GuestError(f"guest at {address}: {error}")
    return reader, writer, response


async def _call(
    where: GuestEndpoint | str,
    secret: str,
    op: str,
    fields: dict[str, Any] | None,
    seconds: float,
    limit: int = p.MAX_REQUEST_BYTES,
) -> dict[str, Any]:
    """One request, one answer."""
    _, writer, response = await _request(where, secret, op, fields, seconds, limit)
    writer.close()
    return response


# The public functions take ``timeout=`` (ASYNC109) because callers need one
# default per operation; it bounds connecting and the request/response exchange.
async def health(
    where: GuestEndpoint | str,
    secret: str,
    *,
    timeout: float = 5.0,  # noqa: ASYNC109
) -> dict[str, Any]:
    """Return the guest's health object (configured, version, state, agentPid, ...)."""
    return await _call(where, secret, p.OP_HEALTH, None, timeout)


async def configure(
    where: GuestEndpoint | str,
    secret: str,
    config: dict[str, Any],
    *,
    timeout: float = 10.0,  # noqa: ASYNC109
) -> None:
    """Hand the guest its config (see :func:`gentity.guest.config.parse_config`) and with
    it the agent's secrets. Repeating the same config is harmless; GuestError if the guest
    refuses it (invalid, or a different config already applied)."""
    await _call(where, secret, p.OP_CONFIGURE, {"config": config}, timeout)


async def wait(
    where: GuestEndpoint | str,
    secret: str,
    *,
    since: object,
    timeout: float = 30.0,  # noqa: ASYNC109
) -> dict[str, Any]:
    """Health as soon as its ``version`` differs from ``since``, or after ``timeout``
    seconds (at most 60) when nothing changed."""
    seconds = min(timeout, p.MAX_WAIT)
    fields = {"since": since, "timeout": seconds}
    return await _call(where, secret, p.OP_WAIT, fields, seconds + 10.0)


async def logs(
    where: GuestEndpoint | str,
    secret: str,
    *,
    lines: int,
    timeout: float = 10.0,  # noqa: ASYNC109
) -> tuple[list[dict[str, str]], str]:
    """The last ``lines`` log records, oldest first, and the cursor right after them (for
    :func:`follow`)."""
    response = await _call(where, secret, p.OP_LOGS, {"lines": lines}, timeout, MAX_LOGS_BYTES)
    records, cursor = response.get("records"), response.get("cursor")
    if not isinstance(records, list) or not isinstance(cursor, str):
        raise GuestError("the guest sent an invalid logs answer")
    return [r for r in records if isinstance(r, dict)], cursor


async def follow(
    where: GuestEndpoint | str,
    secret: str,
    *,
    cursor: str | None = None,
    lines: int | None = None,
    timeout: float = 10.0,  # noqa: ASYNC109
) -> AsyncGenerator[tuple[str, dict[str, str]], None]:
    """Open a stream of ``(cursor, record)`` for each log record after ``cursor`` (one this
    stream or :func:`logs` gave out), or after the last ``lines`` records, or from now on.

    The request is made here, so a refusal raises GuestError before any record; the stream
    then runs until the consumer closes it or the guest goes away. Resuming from a cursor
    sees no record twice and misses none. ``timeout`` bounds connecting and the answer.
    """
    fields = {"cursor": cursor, "lines": lines}
    reader, writer, _ = await _request(where, secret, p.OP_FOLLOW, fields, timeout, MAX_FOLLOW_LINE)
    return _records(reader, writer)


async def _records(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> AsyncGenerator[tuple[str, dict[str, str]], None]:
    try:
        while True:
            try:
                line = await reader.readline()
            except (OSError, ValueError):
                return
            if not line.endswith(b"\n"):
                return  # the guest closed the stream (it stopped)
            try:
                item = json.loads(line)
            except ValueError:
                raise GuestError("the guest sent an invalid log line") from None
            if not (isinstance(item, dict) and isinstance(item.get("cursor"), str)):
                raise GuestError("the guest sent an invalid log line")
            record = item.get("record")
            if isinstance(record, dict):
                yield item["cursor"], record
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def follow_batches(
    where: GuestEndpoint | str,
    secret: str,
    *,
    cursor: str | None = None,
    lines: int | None = None,
    timeout: float = 10.0,  # noqa: ASYNC109
) -> AsyncGenerator[list[tuple[str, dict[str, str]]], None]:
    """:func:`follow`, a list at a time: every record that has arrived when the stream is
    read, so that a busy log costs its reader one wake-up per read and not one per record.
    Lists are never empty; cursors are ASCII digits (GuestError otherwise)."""
    fields = {"cursor": cursor, "lines": lines}
    reader, writer, _ = await _request(where, secret, p.OP_FOLLOW, fields, timeout, MAX_FOLLOW_LINE)
    return _batches(reader, writer)


#: What one read of a followed stream takes at most.
FOLLOW_READ: Final = 256 * 1024


def _is_cursor(value: object) -> TypeGuard[str]:
    # A byte offset: ASCII digits (str.isdigit() alone takes "²"), and not absurdly long.
    return isinstance(value, str) and value.isascii() and value.isdigit() and len(value) < 20


async def _batches(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> AsyncGenerator[list[tuple[str, dict[str, str]]], None]:
    pending = b""
    try:
        while True:
            try:
                chunk = await reader.read(FOLLOW_READ)
            except (OSError, ValueError):
                return
            if not chunk:
                return  # the guest closed the stream (it stopped)
            *lines, pending = (pending + chunk).split(b"\n")
            if len(pending) > MAX_FOLLOW_LINE:
                raise GuestError("the guest sent an over-long log line")
            batch: list[tuple[str, dict[str, str]]] = []
            for line in lines:
                try:
                    item = json.loads(line)
                except ValueError:
                    raise GuestError("the guest sent an invalid log line") from None
                cursor = item.get("cursor") if isinstance(item, dict) else None
                if not _is_cursor(cursor):
                    raise GuestError("the guest sent an invalid log line")
                record = item.get("record")
                if isinstance(record, dict):
                    batch.append((cursor, record))
            if batch:
                yield batch
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def open_session(
    where: GuestEndpoint | str,
    secret: str,
    *,
    op: Literal["attach", "shell"] = "attach",
    cols: int | None = None,
    rows: int | None = None,
    timeout: float = 10.0,  # noqa: ASYNC109
) -> GuestSession:
    """Attach to the agent's terminal (``attach``) or open a private shell (``shell``).

    ``cols``/``rows`` resize the terminal before the replay is sent. Raises
    GuestError if the guest is unreachable or refuses (e.g. agent install failed).
    """
    if op not in (p.OP_ATTACH, p.OP_SHELL):
        raise ValueError(f"op must be 'attach' or 'shell', not {op!r}")
    reader, writer, _ = await _request(
        where, secret, op, {"cols": cols, "rows": rows}, timeout, SESSION_READ_LIMIT
    )
    return GuestSession(reader, writer)


#: What a terminal's reader buffers before it stops reading (twice this, as asyncio counts):
#: one batch of output from the guest fits, so bulk output is not read in pieces with the
#: socket switched off and on between them, and a client that stops reading still pushes
#: back on the guest within a few hundred KiB.
SESSION_READ_LIMIT: Final = 256 * 1024


class _FrameStream:
    """A connection that carries frames after the guest's answer: closing, ``async with``,
    and reading the next frame, which both the terminal and ``exec`` need."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._ended = False

    async def _next_frame(self) -> tuple[bytes, bytes] | None:
        """The next frame, or None once the connection is closed (or the guest went away)."""
        if self._ended:
            return None
        try:
            frame = await p.read_frame(self._reader)
        except p.ProtocolError as exc:
            await self.close()
            raise GuestError(f"protocol error from the guest: {exc}") from None
        except OSError:
            frame = None
        if frame is None:
            self._ended = True
        return frame

    async def close(self) -> None:
        """Close the connection."""
        self._ended = True
        if not self._writer.is_closing():
            self._writer.close()
        with contextlib.suppress(OSError):
            await self._writer.wait_closed()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: types.TracebackType | None,
    ) -> None:
        await self.close()


class GuestSession(_FrameStream):
    """An attached terminal: send input and resizes, read output until exit.

    Closing it leaves an attached agent running; a private shell is hung up."""

    async def send_input(self, data: bytes) -> None:
        """Send keystrokes/bytes to the terminal."""
        for chunk in p.chunks(data):
            await self._send(p.encode_frame(p.FRAME_INPUT, chunk))

    async def resize(self, cols: int, rows: int) -> None:
        """Set the terminal size (clamped to 1..1000 by the guest)."""
        await self._send(p.encode_resize(cols, rows))

    async def read(self) -> Output | Exit | None:
        """Next event: Output, Exit, or None once the connection is closed
        (after an Exit, or without one if the guest went away)."""
        while (frame := await self._next_frame()) is not None:
            kind, payload = frame
            if kind == p.FRAME_OUTPUT:
                return Output(payload)
            if kind == p.FRAME_EXIT:
                self._ended = True
                try:
                    return p.decode_exit(payload)
                except p.ProtocolError as exc:
                    raise GuestError(str(exc)) from None
            # Unknown frame types are skipped: newer guests may add some.
        return None

    async def _send(self, frame: bytes) -> None:
        if self._writer.is_closing():
            raise GuestError("the guest session is closed")
        try:
            self._writer.write(frame)
            await self._writer.drain()
        except OSError as exc:
            raise GuestError(f"sending to the guest failed: {exc}") from None


@dataclass(frozen=True, slots=True)
class ExecOutput:
    """Output of an ``exec`` command: ``stream`` is ``stdout`` or ``stderr``."""

    stream: Literal["stdout", "stderr"]
    data: bytes


async def open_exec(
    where: GuestEndpoint | str,
    secret: str,
    command: list[str],
    *,
    stdin: bytes = b"",
    cwd: str | None = None,
    env: dict[str, str] | None = None,
    run_timeout: float = p.DEFAULT_EXEC_TIMEOUT,
    max_output: int | None = None,
    timeout: float = 10.0,  # noqa: ASYNC109
) -> GuestExec:
    """Start ``command`` beside the agent, on pipes, and send it ``stdin`` (then its end).

    The guest kills it after ``run_timeout`` seconds, or when the returned :class:`GuestExec`
    is closed before the command ended. Raises GuestRefused when the guest will not run it
    (``reason`` says why), GuestError when it cannot be reached or the request does not fit
    in a request line. ``timeout`` bounds connecting and the answer.
    """
    fields = {
        "command": command,
        "cwd": cwd,
        "env": env,
        "timeout": run_timeout,
        "maxOutput": max_output,
    }
    try:
        p.encode_request(secret, p.OP_EXEC, fields)
    except ValueError:
        raise GuestRefused("the command, cwd and env are too long", p.REFUSED_INVALID) from None
    reader, writer, _ = await _request(where, secret, p.OP_EXEC, fields, timeout)
    execution = GuestExec(reader, writer)
    # A command that does not read its stdin may be done already and its guest gone: what
    # it printed is still there to read, so a failed send is not an error here.
    with contextlib.suppress(GuestError):
        await execution.send_stdin(stdin, close=True)
    return execution


class GuestExec(_FrameStream):
    """A running ``exec`` command: read its output until its exit. Closing it before the
    command ended kills the command with its tree."""

    async def send_stdin(self, data: bytes, *, close: bool = False) -> None:
        """Send bytes to the command's stdin; ``close`` then ends its stdin."""
        try:
            for chunk in p.chunks(data):
                self._writer.write(p.encode_frame(p.FRAME_INPUT, chunk))
                await self._writer.drain()
            if close:
                self._writer.write(p.encode_frame(p.FRAME_CLOSE_STDIN, b""))
                await self._writer.drain()
        except OSError as exc:
            raise GuestError(f"sending to the guest failed: {exc}") from None

    async def read(self) -> ExecOutput | ExecExit | None:
        """Next event: ExecOutput, then one ExecExit; None once the connection is closed
        (after the ExecExit, or without one if the guest went away)."""
        while (frame := await self._next_frame()) is not None:
            kind, payload = frame
            if kind == p.FRAME_OUTPUT:
                return ExecOutput("stdout", payload)
            if kind == p.FRAME_STDERR:
                return ExecOutput("stderr", payload)
            if kind == p.FRAME_EXIT:
                self._ended = True
                try:
                    return p.decode_exec_exit(payload)
                except (p.ProtocolError, ValueError) as exc:
                    raise GuestError(f"protocol error from the guest: {exc}") from None
        return None


#: The most directory entries accepted from a guest (it sends at most 10,000).
MAX_LISTING_ENTRIES: Final = 10_000
#: The most bytes of listing accepted from a guest: 10,000 entries of the longest names fit,
#: and a guest that sends huge entries cannot make the server hold gigabytes.
MAX_LISTING_BYTES: Final = 16 * 1024 * 1024
#: How long the guest may take to make a written file durable and answer.
PUT_COMMIT_TIMEOUT: Final = 120.0


class FileDownload:
    """A file the guest streams: ``size`` bytes from :meth:`chunks`, which raises GuestError
    if the stream ends short (the file shrank, the guest went away)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, size: int):
        self._reader = reader
        self._writer = writer
        self.size = size

    async def chunks(self) -> AsyncGenerator[bytes, None]:
        received = 0
        try:
            while True:
                try:
                    frame = await p.read_frame(self._reader)
                except (OSError, p.ProtocolError):
                    frame = None
                if frame is None:
                    raise GuestError("the file changed or the instance stopped while it was read")
                kind, payload = frame
                if kind == p.FRAME_END:
                    if received != self.size:
                        raise GuestError("the file changed while it was read")
                    return
                if kind == p.FRAME_DATA:
                    received += len(payload)
                    if received > self.size:
                        raise GuestError("the file changed while it was read")
                    yield payload
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        if not self._writer.is_closing():
            self._writer.close()
        with contextlib.suppress(OSError):
            await self._writer.wait_closed()


async def get_file(
    where: GuestEndpoint | str,
    secret: str,
    path: str,
    *,
    timeout: float = 30.0,  # noqa: ASYNC109
) -> dict[str, Any] | FileDownload:
    """What is at ``path`` in the instance: a directory's listing (``{"type": "directory",
    "entries", "truncated"}``) or a file to stream. GuestRefused when the path is refused
    (outside the volume, missing…)."""
    reader, writer, response = await _request(where, secret, p.OP_FILE_GET, {"path": path}, timeout)
    if response.get("type") == "directory":
        try:
            async with asyncio.timeout(timeout):
                entries = await _entries(reader)
        except TimeoutError:
            raise GuestError("timed out waiting for the guest's listing") from None
        finally:
            writer.close()
        return {
            "type": "directory",
            "entries": entries,
            "truncated": bool(response.get("truncated")),
        }
    size = response.get("size")
    if response.get("type") != "file" or not isinstance(size, int) or size < 0:
        writer.close()
        raise GuestError("the guest sent an invalid file answer")
    return FileDownload(reader, writer, size)


async def _entries(reader: asyncio.StreamReader) -> list[Any]:
    """A listing's entries, from its data frames up to the end frame."""
    entries: list[Any] = []
    received = 0
    while True:
        try:
            frame = await p.read_frame(reader)
        except (OSError, p.ProtocolError):
            frame = None
        if frame is None:
            raise GuestError("the guest went away while it listed the directory")
        kind, payload = frame
        if kind == p.FRAME_END:
            return entries
        received += len(payload)
        if received > MAX_LISTING_BYTES:
            raise GuestError("the guest sent an invalid listing")
        if kind == p.FRAME_DATA:
            try:
                batch = json.loads(payload)
            except ValueError:
                batch = None
            if not isinstance(batch, list) or len(entries) + len(batch) > MAX_LISTING_ENTRIES:
                raise GuestError("the guest sent an invalid listing")
            entries.extend(batch)


async def put_file(
    where: GuestEndpoint | str,
    secret: str,
    path: str,
    data: AsyncIterable[bytes],
    *,
    timeout: float = 30.0,  # noqa: ASYNC109
) -> dict[str, Any]:
    """Write ``data`` to ``path`` in the instance (parents made, replaced atomically once all
    of it arrived); returns ``{"path", "size", "created"}``. If ``data`` raises, nothing
    changes in the instance."""
    reader, writer, _ = await _request(where, secret, p.OP_FILE_PUT, {"path": path}, timeout)
    try:
        try:
            async for chunk in data:
                for piece in p.chunks(chunk):
                    writer.write(p.encode_frame(p.FRAME_DATA, piece))
                    await writer.drain()
            writer.write(p.encode_frame(p.FRAME_END, b""))
            await writer.drain()
            async with asyncio.timeout(PUT_COMMIT_TIMEOUT):
                line = await reader.readline()
        except TimeoutError:
            raise GuestError("timed out waiting for the guest to store the file") from None
        except (OSError, ValueError) as exc:
            raise GuestError(f"the connection to the guest failed: {exc}") from None
        try:
            answer = json.loads(line)
            if not isinstance(answer, dict):
                raise ValueError
        except ValueError:
            raise GuestError("the guest went away before it stored the file") from None
        if answer.get("ok") is not True:
            error = str(answer.get("error") or "request refused")
            reason = answer.get("reason")
            raise GuestRefused(error, reason) if isinstance(reason, str) else GuestError(error)
        return answer
    finally:
        writer.close()


async def delete_file(
    where: GuestEndpoint | str,
    secret: str,
    path: str,
    *,
    recursive: bool = False,
    timeout: float = 60.0,  # noqa: ASYNC109
) -> str:
    """Remove ``path`` in the instance (a directory only when empty, unless ``recursive``);
    returns what it was (``file``, ``directory``, ``symlink``, ``other``)."""
    fields = {"path": path, "recursive": True if recursive else None}
    response = await _call(where, secret, p.OP_FILE_DELETE, fields, timeout)
    return str(response.get("type", ""))


async def ports(
    where: GuestEndpoint | str,
    secret: str,
    *,
    timeout: float = 5.0,  # noqa: ASYNC109
) -> list[int]:
    """The TCP ports something listens on inside the instance, sorted (the guest's own
    port left out)."""
    response = await _call(where, secret, p.OP_PORTS, None, timeout)
    found = response.get("ports")
    if not isinstance(found, list):
        raise GuestError("the guest sent an invalid ports answer")
    return sorted(
        {n for n in found if isinstance(n, int) and not isinstance(n, bool) and 0 < n < 65536}
    )


async def open_port(
    where: GuestEndpoint | str,
    secret: str,
    port: int,
    *,
    timeout: float = 10.0,  # noqa: ASYNC109
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A TCP connection to ``port`` inside the instance, through the guest: what is written
    reaches the program listening there, what it sends comes back. GuestError when nothing
    listens there (or the guest refuses the port). Closing the writer ends it."""
    reader, writer, _ = await _request(
        where, secret, p.OP_CONNECT, {"port": port}, timeout, 256 * 1024
    )
    return reader, writer
