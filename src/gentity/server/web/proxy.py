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
from websockets.datastructures import Headers as WsHeaders
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
    headers = filter_response([(bytes(k), bytes(v)) for k, v in event.headers.raw_items()])
    await send({"type": "http.response.start", "status": event.status_code, "headers": headers})
    while True:
        event = await _next_event(conn, reader)
        if isinstance(event, h11.Data):
            await send({"type": "http.response.body", "body": bytes(event.data), "more_body": True})
        elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
            break
    await send({"type": "http.response.body", "body": b"", "more_body": False})


# --- WebSocket -----------------------------------------------------------------------------


@dataclasses.dataclass
class Handshake:
    """What the instance answered to the WebSocket upgrade."""

    response: WsResponse
    protocol: ClientProtocol

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
    request = protocol.connect()
    own = {k.lower() for k in request.headers}
    merged = WsHeaders()
    for raw_name, raw_value in headers:
        if raw_name.decode("latin-1").lower() not in own:
            merged[raw_name.decode("latin-1")] = raw_value.decode("latin-1")
    for name, value in request.headers.raw_items():
        if name.lower() != "host":
            merged[name] = value
    merged["Host"] = next((v.decode("latin-1") for k, v in headers if k == b"host"), "preview")
    protocol.send_request(dataclasses.replace(request, path=target, headers=merged))
    try:
        async with asyncio.timeout(30):
            while True:
                writer.write(b"".join(protocol.data_to_send()))
                await writer.drain()
                for event in protocol.events_received():
                    if isinstance(event, WsResponse):
                        return Handshake(event, protocol)
                data = await reader.read(_CHUNK)
                if data:
                    protocol.receive_data(data)
                    continue
                protocol.receive_eof()
                for event in protocol.events_received():
                    if isinstance(event, WsResponse):
                        return Handshake(event, protocol)
                raise UpstreamError("the program closed the connection without answering")
    except (TimeoutError, ConnectionError) as exc:
        raise UpstreamError(f"no answer to the WebSocket upgrade: {exc or 'timed out'}") from None


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
        while True:
            data = await reader.read(_CHUNK)
            if data:
                protocol.receive_data(data)
            else:
                protocol.receive_eof()
            for frame in protocol.events_received():
                assert isinstance(frame, Frame)
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
            if protocol.close_rcvd is not None or not data or protocol.close_expected():
                await _close(send, protocol.close_rcvd)
                return

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
