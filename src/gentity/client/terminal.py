"""The terminal WebSocket (``GET /api/instances/<id>/terminal``), sync and async.

Protocol, JSON text frames::

    client → server  {"type": "input", "data": "..."}
                     {"type": "resize", "cols": N, "rows": N}
    server → client  {"type": "output", "data": "..."}
                     {"type": "exit", "exitCode": N, "signal": null | "SIGKILL"}

After ``exit`` the server closes the socket. The token travels in the ``Authorization`` header,
not in ``?token=``, so it never lands in an access log.
"""

from __future__ import annotations

import json
import signal as signals
from collections.abc import AsyncIterator, Callable, Coroutine, Generator, Iterator, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from websockets.asyncio.client import ClientConnection as AsyncConnection
from websockets.asyncio.client import connect as async_connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI
from websockets.sync.client import ClientConnection as SyncConnection
from websockets.sync.client import connect as sync_connect

from gentity.client.errors import ApiConnectionError, ApiError, describe_transport_error

#: Output frames can be large when a program dumps a screenful at once.
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
OPEN_TIMEOUT = 30.0


@dataclass(frozen=True)
class TerminalOutput:
    """Bytes the remote terminal wrote, decoded as UTF-8 by the server."""

    data: str


@dataclass(frozen=True)
class TerminalExit:
    """The remote process ended: with ``exit_code``, or killed by ``signal`` (e.g. ``SIGKILL``)."""

    exit_code: int | None
    signal: str | None = None

    @property
    def status(self) -> int:
        """A shell-style status: the exit code, or 128 + the signal number."""
        if self.exit_code is not None:
            return self.exit_code & 0xFF
        if self.signal:
            try:
                return 128 + signals.Signals[self.signal].value
            except KeyError:
                pass
        return 255


TerminalEvent = TerminalOutput | TerminalExit


def websocket_url(base_url: str, path: str) -> str:
    scheme, rest = base_url.split("://", 1)
    return f"{'wss' if scheme == 'https' else 'ws'}://{rest}{path}"


def input_message(data: str) -> str:
    return json.dumps({"type": "input", "data": data})


def resize_message(cols: int, rows: int) -> str:
    return json.dumps({"type": "resize", "cols": cols, "rows": rows})


def parse_message(raw: str | bytes) -> TerminalEvent | None:
    """One server frame as an event; None for anything this client does not understand."""
    try:
        message: Any = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(message, dict):
        return None
    if message.get("type") == "output" and isinstance(message.get("data"), str):
        return TerminalOutput(message["data"])
    if message.get("type") == "exit":
        code = message.get("exitCode")
        sig = message.get("signal")
        return TerminalExit(
            code if isinstance(code, int) else None, sig if isinstance(sig, str) else None
        )
    return None


def _handshake_error(exc: Exception, url: str) -> ApiError:
    """Map what websockets raises while connecting onto the SDK's errors."""
    if isinstance(exc, InvalidStatus):
        status = exc.response.status_code
        message = exc.response.reason_phrase or "WebSocket upgrade refused"
        try:
            body = json.loads(exc.response.body or b"")
            if isinstance(body, dict) and isinstance(body.get("error"), str):
                message = body["error"]
        except ValueError:
            pass
        return ApiError(status, message)
    if isinstance(exc, InvalidURI):
        return ApiError(0, f"invalid terminal URL {url}")
    if isinstance(exc, InvalidHandshake):
        return ApiConnectionError(url, f"WebSocket handshake failed: {exc}")
    return ApiConnectionError(url, describe_transport_error(exc))


_CONNECT_ERRORS = (InvalidHandshake, InvalidURI, OSError, TimeoutError)


class AsyncTerminal:
    """An open terminal on an instance. Iterate it for :class:`TerminalOutput` events; the
    iteration ends when the remote exits (then :attr:`exit` is set) or the socket closes."""

    def __init__(self, connection: AsyncConnection) -> None:
        self._ws = connection
        self.exit: TerminalExit | None = None

    async def send(self, data: str) -> None:
        """Type ``data`` (keystrokes, pasted text) into the terminal."""
        await self._ws.send(input_message(data))

    async def resize(self, cols: int, rows: int) -> None:
        await self._ws.send(resize_message(cols, rows))

    async def recv(self) -> TerminalEvent | None:
        """The next event, or None once the connection is closed."""
        while True:
            try:
                raw = await self._ws.recv()
            except ConnectionClosed:
                return None
            event = parse_message(raw)
            if isinstance(event, TerminalExit):
                self.exit = event
            if event is not None:
                return event

    async def __aiter__(self) -> AsyncIterator[TerminalEvent]:
        while (event := await self.recv()) is not None:
            yield event
            if isinstance(event, TerminalExit):
                return

    async def close(self) -> None:
        await self._ws.close()

    async def __aenter__(self) -> AsyncTerminal:
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


class PendingTerminal:
    """A terminal being opened: ``await`` it for an :class:`AsyncTerminal`, or use it as an
    async context manager that closes the terminal on the way out."""

    def __init__(self, opener: Callable[[], Coroutine[Any, Any, AsyncTerminal]]) -> None:
        self._opener = opener
        self._terminal: AsyncTerminal | None = None

    def __await__(self) -> Generator[Any, None, AsyncTerminal]:
        return self._opener().__await__()

    async def __aenter__(self) -> AsyncTerminal:
        self._terminal = await self._opener()
        return self._terminal

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._terminal is not None:
            await self._terminal.close()


async def open_async_terminal(
    base_url: str,
    path: str,
    headers: Mapping[str, str],
    user_agent: str,
    open_timeout: float = OPEN_TIMEOUT,
) -> AsyncTerminal:
    """Connect to ``path`` on ``base_url`` (http → ws) with ``headers`` (the credentials)."""
    url = websocket_url(base_url, path)
    try:
        ws = await async_connect(
            url,
            additional_headers=dict(headers),
            open_timeout=open_timeout,
            max_size=MAX_MESSAGE_BYTES,
            user_agent_header=user_agent,
        )
    except _CONNECT_ERRORS as exc:
        raise _handshake_error(exc, base_url) from exc
    return AsyncTerminal(ws)


class Terminal:
    """The blocking twin of :class:`AsyncTerminal`."""

    def __init__(self, connection: SyncConnection) -> None:
        self._ws = connection
        self.exit: TerminalExit | None = None

    def send(self, data: str) -> None:
        """Type ``data`` (keystrokes, pasted text) into the terminal."""
        self._ws.send(input_message(data))

    def resize(self, cols: int, rows: int) -> None:
        self._ws.send(resize_message(cols, rows))

    def recv(self, timeout: float | None = None) -> TerminalEvent | None:
        """The next event, or None once the connection is closed.

        Raises :class:`TimeoutError` when ``timeout`` seconds pass without one.
        """
        while True:
            try:
                raw = self._ws.recv(timeout)
            except ConnectionClosed:
                return None
            event = parse_message(raw)
            if isinstance(event, TerminalExit):
                self.exit = event
            if event is not None:
                return event

    def __iter__(self) -> Iterator[TerminalEvent]:
        while (event := self.recv()) is not None:
            yield event
            if isinstance(event, TerminalExit):
                return

    def close(self) -> None:
        self._ws.close()

    def __enter__(self) -> Terminal:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def open_terminal(
    base_url: str,
    path: str,
    headers: Mapping[str, str],
    user_agent: str,
    open_timeout: float = OPEN_TIMEOUT,
) -> Terminal:
    """Blocking :func:`open_async_terminal`."""
    url = websocket_url(base_url, path)
    try:
        ws = sync_connect(
            url,
            additional_headers=dict(headers),
            open_timeout=open_timeout,
            max_size=MAX_MESSAGE_BYTES,
            user_agent_header=user_agent,
        )
    except _CONNECT_ERRORS as exc:
        raise _handshake_error(exc, base_url) from exc
    # websockets >= 17.1 warns unless the connection is entered as a context manager; the
    # Terminal owns it (and closes it) from here, so enter it now, on every version.
    return Terminal(ws.__enter__())
