"""Asyncio client for the guest daemon, used by the control plane.

>>> info = await health("unix:/run/guest.sock", secret)
>>> async with await open_session("unix:/run/guest.sock", secret, cols=120, rows=32) as s:
...     await s.send_input(b"ls\\n")
...     while (event := await s.read()) is not None:
...         ...  # Output(data) or Exit(exit_code, signal)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import types
from typing import Any, Literal

from gentity.guest import protocol as p
from gentity.guest.protocol import Exit, Output

__all__ = ["Exit", "GuestError", "GuestSession", "Output", "health", "open_session"]


class GuestError(Exception):
    """Talking to the guest failed: unreachable, timeout, unauthorized, refused
    request or protocol error. The message says which, in plain words."""


async def _connect(
    address: str, seconds: float
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    try:
        addr = p.parse_address(address)
    except ValueError as exc:
        raise GuestError(str(exc)) from None
    if addr.kind == "fd":
        raise GuestError(f"cannot connect to {address}: a descriptor is the guest's own")
    try:
        async with asyncio.timeout(seconds):
            if addr.kind == "unix":
                return await asyncio.open_unix_connection(addr.path, limit=p.MAX_REQUEST_BYTES)
            return await asyncio.open_connection(addr.host, addr.port, limit=p.MAX_REQUEST_BYTES)
    except TimeoutError:
        raise GuestError(f"timed out connecting to the guest at {address}") from None
    except FileNotFoundError:
        raise GuestError(f"guest not reachable at {address}: socket does not exist") from None
    except ConnectionRefusedError:
        raise GuestError(f"guest not reachable at {address}: connection refused") from None
    except OSError as exc:
        raise GuestError(f"guest not reachable at {address}: {exc.strerror or exc}") from None


async def _request(
    address: str, secret: str, op: str, cols: int | None, rows: int | None, seconds: float
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, dict[str, Any]]:
    """Connect, send the request line and read the guest's answer."""
    reader, writer = await _connect(address, seconds)
    try:
        async with asyncio.timeout(seconds):
            writer.write(p.encode_request(secret, op, cols=cols, rows=rows))
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


# The public functions take ``timeout=`` (ASYNC109) because callers need one
# default per operation; it bounds connecting and the request/response exchange.
async def health(
    address: str,
    secret: str,
    *,
    timeout: float = 5.0,  # noqa: ASYNC109
) -> dict[str, Any]:
    """Return the guest's health object (state, agentPid, restarts, ...)."""
    _, writer, response = await _request(address, secret, p.OP_HEALTH, None, None, timeout)
    writer.close()
    return response


async def open_session(
    address: str,
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
    reader, writer, _ = await _request(address, secret, op, cols, rows, timeout)
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
