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
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import types
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any, Final, Literal

from gentity.guest import protocol as p
from gentity.guest.protocol import Exit, Output

__all__ = [
    "Exit",
    "GuestEndpoint",
    "GuestError",
    "GuestSession",
    "Output",
    "configure",
    "follow",
    "health",
    "logs",
    "open_port",
    "open_session",
    "ports",
    "wait",
]

#: The longest ``logs`` answer accepted from a guest: it holds many records.
MAX_LOGS_BYTES: Final = 64 * 1024 * 1024
#: The longest line of a ``follow`` stream (one record; the guest skips longer lines).
MAX_FOLLOW_LINE: Final = 2 * 1024 * 1024


class GuestError(Exception):
    """Talking to the guest failed: unreachable, timeout, unauthorized, refused
    request or protocol error. The message says which, in plain words."""


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
    reader, writer, _ = await _request(where, secret, op, {"cols": cols, "rows": rows}, timeout)
    return GuestSession(reader, writer)


class GuestSession:
    """An attached terminal: send input and resizes, read output until exit."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._ended = False

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
        while not self._ended:
            try:
                frame = await p.read_frame(self._reader)
            except p.ProtocolError as exc:
                await self.close()
                raise GuestError(f"protocol error from the guest: {exc}") from None
            except OSError:
                frame = None
            if frame is None:
                self._ended = True
                break
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

    async def close(self) -> None:
        """Close the connection. An attached agent keeps running; a shell is hung up."""
        self._ended = True
        if not self._writer.is_closing():
            self._writer.close()
        with contextlib.suppress(OSError):
            await self._writer.wait_closed()

    async def _send(self, frame: bytes) -> None:
        if self._writer.is_closing():
            raise GuestError("the guest session is closed")
        try:
            self._writer.write(frame)
            await self._writer.drain()
        except OSError as exc:
            raise GuestError(f"sending to the guest failed: {exc}") from None

    async def __aenter__(self) -> GuestSession:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: types.TracebackType | None,
    ) -> None:
        await self.close()


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
