"""Relaying one HTTP request or WebSocket to a program inside an instance, over a byte stream
the instance's guest opened to its port (``guest.client.open_port``).

HTTP goes out as HTTP/1.1 through ``h11``, one request per connection, with both bodies
streamed (nothing big is held in memory). A WebSocket is relayed message by message through
the ``websockets`` sans-I/O client: the browser's side is the ASGI server's, the instance's
side is ours. Whatever comes back is instance output, so it is parsed, not trusted: response
headers are rebuilt, never copied as bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Callable, Iterable
from typing import Final

import h11
from starlette.types import Message, Receive, Scope, Send
from websockets.client import ClientProtocol
from websockets.frames import Close, Frame, Opcode
from websockets.http11 import Response as WsResponse
from websockets.uri import parse_uri

#: Headers of one hop only (RFC 9110 7.6.1), never passed on.
HOP_BY_HOP: Final = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
_CHUNK: Final = 64 * 1024
#: The largest WebSocket message taken from an instance (the browser's side has its own).
MAX_MESSAGE_BYTES: Final = 16 * 1024 * 1024
#: Status and headers from the instance must come within this long of the request's end
#: (a long poll answers within it too; a stream then may take as long as it likes).
RESPONSE_TIMEOUT: Final = 300.0

Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]
Headers = list[tuple[bytes, bytes]]


class UpstreamError(Exception):
    """The program inside the instance broke the exchange; the message says how."""


def hop_by_hop(headers: Iterable[tuple[bytes, bytes]]) -> set[bytes]:
    """The header names this hop must drop: the fixed ones and those ``Connection`` lists."""
    names = {name.encode() for name in HOP_BY_HOP}
    for name, value in headers:
        if name.lower() == b"connection":
            names |= {token.strip().lower() for token in value.split(b",") if token.strip()}
    return names


async def http(
    scope: Scope,
    receive: Receive,
    send: Send,
    upstream: Stream,
    headers: Headers,
    filter_response: Callable[[Headers], Headers],
) -> None:
    """Send the request of ``scope`` (with ``headers``, already cleaned) over ``upstream``
    and stream the answer back; ``filter_response`` cleans the answer's headers."""
    reader, writer = upstream
    conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=64 * 1024)
    target = scope.get("raw_path") or scope["path"].encode()
    if scope.get("query_string"):
        target += b"?" + scope["query_string"]
    try:
        writer.write(conn.send(h11.Request(method=scope["method"], target=target, headers=headers)))
        await _send_body(conn, receive, writer)
    except (h11.LocalProtocolError, ConnectionError) as exc:
        raise UpstreamError(f"could not send the request: {exc}") from None
    # Once the request is out, a client that goes away ends the exchange at once.
    gone = asyncio.ensure_future(_disconnected(receive))
    relay = asyncio.ensure_future(_relay_response(conn, reader, send, filter_response))
    try:
        await asyncio.wait((gone, relay), return_when=asyncio.FIRST_COMPLETED)
        if relay.done():
            relay.result()
    finally:
        for task in (gone, relay):
            task.cancel()
        await asyncio.gather(gone, relay, return_exceptions=True)


async def _send_body(conn: h11.Connection, receive: Receive, writer: asyncio.StreamWriter) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ConnectionError("the client went away")
        body = message.get("body", b"")
        if body and conn.their_state is not h11.DONE:
            writer.write(conn.send(h11.Data(data=body)))
            await writer.drain()  # an upload goes at the instance's pace
        if not message.get("more_body", False):
            break
    writer.write(conn.send(h11.EndOfMessage()))
    await writer.drain()


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _next_event(conn: h11.Connection, reader: asyncio.StreamReader) -> h11.Event:
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            raise UpstreamError(f"the answer is not valid HTTP/1.1: {exc}") from None
        if event is not h11.NEED_DATA:
            assert not isinstance(event, type)
            return event
        try:
            data = await reader.read(_CHUNK)
        except ConnectionError:
            data = b""
        conn.receive_data(data)


async def _relay_response(
    conn: h11.Connection,
    reader: asyncio.StreamReader,
    send: Send,
    filter_response: Callable[[Headers], Headers],
) -> None:
    try:
        async with asyncio.timeout(RESPONSE_TIMEOUT):
            while True:
                event = await _next_event(conn, reader)
                if isinstance(event, h11.Response):
                    break
                if isinstance(event, h11.ConnectionClosed):
                    raise UpstreamError("the program closed the connection without answering")
                # 1xx (100 Continue...) answers are this hop's business.
    except TimeoutError:
        raise UpstreamError("the program did not answer in time") from None
    headers = filter_response(_framing_cleaned(event.headers.raw_items()))
    await send({"type": "http.response.start", "status": event.status_code, "headers": headers})
    while True:
        event = await _next_event(conn, reader)
        if isinstance(event, h11.Data):
            await send({"type": "http.response.body", "body": bytes(event.data), "more_body": True})
        elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
            break
    await send({"type": "http.response.body", "body": b"", "more_body": False})


def _framing_cleaned(raw: Iterable[tuple[bytes, bytes]]) -> Headers:
    """The answer's headers, without a ``Content-Length`` when it also has a
    ``Transfer-Encoding``: the body was read by the latter (RFC 9112 6.3), and a length that
    does not match it, passed on, would let the instance split or join answers at the next hop
    (response smuggling). Without it, the ASGI server frames the body itself."""
    headers = [(bytes(k).lower(), bytes(v)) for k, v in raw]
    if any(k == b"transfer-encoding" for k, _ in headers):
        headers = [(k, v) for k, v in headers if k != b"content-length"]
    return headers


# --- WebSocket -----------------------------------------------------------------------------


@dataclasses.dataclass
class Handshake:
    """What the instance answered to the WebSocket upgrade."""

    response: WsResponse
    protocol: ClientProtocol
    early: list[Frame] = dataclasses.field(default_factory=list)
    """Frames that came in the same read as the answer: the relay passes them on first."""

    @property
    def accepted(self) -> bool:
        return self.protocol.handshake_exc is None


async def ws_handshake(
    upstream: Stream, target: str, headers: Headers, subprotocols: list[str]
) -> Handshake:
    """Send the upgrade request (``headers`` already cleaned; the handshake's own are added)
    and read the instance's answer."""
    reader, writer = upstream
    protocol = ClientProtocol(
        parse_uri("ws://preview/"),
        subprotocols=subprotocols or None,  # type: ignore[arg-type]
        max_size=MAX_MESSAGE_BYTES,
    )
    # The request is written here, as bytes: the browser's header values (which may hold any
    # byte but CR, LF and NUL) reach the instance exactly as they came, whichever text
    # encoding the installed ``websockets`` would give them. The protocol object only needs
    # the key it generated, to check the answer.
    own = protocol.connect().headers
    names = {name.lower() for name in own}
    path = target.encode("latin-1")
    if not _one_line(path) or b" " in path:
        raise UpstreamError("the request's path cannot be sent")
    lines = [b"GET " + path + b" HTTP/1.1"]
    host = next((v for k, v in headers if k.lower() == b"host"), b"preview")
    lines.append(b"Host: " + host)
    for name, value in headers:
        if name.decode("latin-1").lower() not in names | {"host"} and _one_line(name + value):
            lines.append(name + b": " + value)
    for key, text in own.raw_items():
        if key.lower() != "host":
            lines.append(key.encode("ascii") + b": " + text.encode("ascii"))
    writer.write(b"\r\n".join(lines) + b"\r\n\r\n")
    try:
        async with asyncio.timeout(30):
            while True:
                writer.write(b"".join(protocol.data_to_send()))
                await writer.drain()
                data = await reader.read(_CHUNK)
                if data:
                    protocol.receive_data(data)
                else:
                    protocol.receive_eof()
                if (answered := _answered(protocol)) is not None:
                    return answered
                if not data:
                    raise UpstreamError("the program closed the connection without answering")
    except (TimeoutError, ConnectionError) as exc:
        raise UpstreamError(f"no answer to the WebSocket upgrade: {exc or 'timed out'}") from None


def _one_line(data: bytes) -> bool:
    # The ASGI server has parsed these already; this only keeps a line a line.
    return not any(c in data for c in b"\r\n\0")


def _answered(protocol: ClientProtocol) -> Handshake | None:
    events = protocol.events_received()
    for index, event in enumerate(events):
        if isinstance(event, WsResponse):
            early = [e for e in events[index + 1 :] if isinstance(e, Frame)]
            return Handshake(event, protocol, early)
    return None


def header_bytes(value: str) -> bytes:
    """A header value ``websockets`` parsed, as the bytes it came as: versions 17 and later
    decode ISO-8859-1, earlier ones ASCII with surrogate escapes."""
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:
        return value.encode("ascii", errors="surrogateescape")


async def ws_relay(
    receive: Receive, send: Send, upstream: Stream, handshake: Handshake, ended: asyncio.Event
) -> None:
    """Carry messages both ways after both handshakes, until either side closes (or ``ended``
    is set: the credential that opened it was revoked)."""
    reader, writer = upstream
    protocol = handshake.protocol

    async def flush() -> None:
        data = b"".join(protocol.data_to_send())
        if data:
            writer.write(data)
            await writer.drain()

    async def browser_to_instance() -> None:
        while True:
            message = await receive()
            if message["type"] == "websocket.receive":
                if message.get("text") is not None:
                    protocol.send_text(message["text"].encode())
                else:
                    protocol.send_binary(message.get("bytes") or b"")
                await flush()
            elif message["type"] == "websocket.disconnect":
                code = message.get("code", 1000)
                protocol.send_close(code if _sendable(code) else 1000)
                await flush()
                return

    async def instance_to_browser() -> None:
        parts: list[bytes] = []
        text = False
        # What came with the answer to the upgrade goes first.
        frames: list[Frame] = handshake.early
        eof = False
        while True:
            for frame in frames:
                if frame.opcode in (Opcode.TEXT, Opcode.BINARY):
                    text, parts = frame.opcode is Opcode.TEXT, [bytes(frame.data)]
                elif frame.opcode is Opcode.CONT:
                    parts.append(bytes(frame.data))
                else:
                    continue
                if frame.fin:
                    await send(_ws_message(b"".join(parts), text))
                    parts = []
            await flush()
            if protocol.close_rcvd is not None or eof or protocol.close_expected():
                await _close(send, protocol.close_rcvd)
                return
            data = await reader.read(_CHUNK)
            if data:
                protocol.receive_data(data)
            else:
                eof = True
                protocol.receive_eof()
            frames = [f for f in protocol.events_received() if isinstance(f, Frame)]

    async def revoked() -> None:
        await ended.wait()
        await send({"type": "websocket.close", "code": 4401, "reason": "credential revoked"})

    tasks = [
        asyncio.ensure_future(browser_to_instance()),
        asyncio.ensure_future(instance_to_browser()),
        asyncio.ensure_future(revoked()),
    ]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _sendable(code: object) -> bool:
    # 1005, 1006 and 1015 say what happened locally; they never travel in a close frame.
    if not isinstance(code, int) or code in (1005, 1006):
        return False
    return 1000 <= code <= 1014 or 3000 <= code <= 4999


def _ws_message(data: bytes, text: bool) -> Message:
    if text:
        return {"type": "websocket.send", "text": data.decode("utf-8", errors="replace")}
    return {"type": "websocket.send", "bytes": data}


async def _close(send: Send, close: Close | None) -> None:
    code = close.code if close is not None and _sendable(close.code) else 1000
    reason = close.reason[:120] if close is not None else ""
    with contextlib.suppress(Exception):
        await send({"type": "websocket.close", "code": code, "reason": reason})


async def deny(scope: Scope, send: Send, status: int, body: bytes, headers: Headers) -> None:
    """Refuse a WebSocket before it is accepted: with an HTTP answer where the server
    supports it, else a plain close (which the server answers with 403)."""
    if "websocket.http.response" in scope.get("extensions", {}):
        await send({"type": "websocket.http.response.start", "status": status, "headers": headers})
        await send({"type": "websocket.http.response.body", "body": body})
    else:
        await send({"type": "websocket.close", "code": 1008})
