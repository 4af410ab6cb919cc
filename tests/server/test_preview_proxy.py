"""The preview relay (``web/proxy.py``) against a program that answers with exact bytes: what
arrives with the answer to an upgrade is relayed, header bytes pass unchanged both ways, and
an answer's framing headers cannot disagree at the next hop."""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from starlette.types import Message

from gentity.server.web import proxy

pytestmark = pytest.mark.anyio
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
Program = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def program(handle: Program) -> AsyncIterator[proxy.Stream]:
    """A server on a loopback port that runs ``handle`` for one connection, and a connection
    to it (standing in for the guest's ``open_port``)."""
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        yield reader, writer
    finally:
        writer.close()
        server.close()


async def read_head(reader: asyncio.StreamReader) -> bytes:
    return await reader.readuntil(b"\r\n\r\n")


def upgrade_answer(head: bytes, extra: bytes = b"") -> bytes:
    key = next(
        line.split(b":", 1)[1].strip()
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"sec-websocket-key:")
    )
    accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
    return (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + accept + b"\r\n" + extra + b"\r\n"
    )


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Browser:
    """The ASGI side of a relay: what it was sent, and a way to hang up."""

    def __init__(self) -> None:
        self.sent: list[Message] = []
        self.incoming: asyncio.Queue[Message] = asyncio.Queue()

    async def receive(self) -> Message:
        return await self.incoming.get()

    async def send(self, message: Message) -> None:
        self.sent.append(message)


async def test_frames_in_the_same_read_as_the_upgrade_answer_are_relayed() -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await read_head(reader)
        # The answer, a greeting and a second message, in one write.
        writer.write(upgrade_answer(head) + b"\x81\x05hello" + b"\x82\x03\x00\x01\x02")
        await writer.drain()
        await reader.read()  # until the relay hangs up

    async with program(handle) as upstream:
        handshake = await proxy.ws_handshake(upstream, "/socket", [(b"host", b"h")], [])
        assert handshake.accepted
        browser = Browser()
        relay = asyncio.ensure_future(
            proxy.ws_relay(browser.receive, browser.send, upstream, handshake, asyncio.Event())
        )
        async with asyncio.timeout(10):
            while len(browser.sent) < 2:
                await asyncio.sleep(0.01)
        browser.incoming.put_nowait({"type": "websocket.disconnect", "code": 1000})
        async with asyncio.timeout(10):
            await relay
    assert browser.sent[:2] == [
        {"type": "websocket.send", "text": "hello"},
        {"type": "websocket.send", "bytes": b"\x00\x01\x02"},
    ]


async def test_upgrade_header_bytes_pass_unchanged_both_ways() -> None:
    seen: list[bytes] = []
    odd = b"caf\xe9 \xc3\xa9 \xff"  # ISO-8859-1, UTF-8 and neither, as browsers may send

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await read_head(reader)
        seen.append(head)
        writer.write(upgrade_answer(head, b"Set-Cookie: c=" + odd + b"; Path=/\r\n"))
        await writer.drain()
        await reader.read()

    headers = [(b"host", b"3000-sh-abc123.localhost"), (b"x-odd", odd), (b"cookie", b"a=" + odd)]
    async with program(handle) as upstream:
        handshake = await proxy.ws_handshake(upstream, "/s?q=%C3%A9", headers, ["chat"])
    assert handshake.accepted
    lines = seen[0].split(b"\r\n")
    assert lines[0] == b"GET /s?q=%C3%A9 HTTP/1.1"
    assert b"Host: 3000-sh-abc123.localhost" in lines
    assert b"x-odd: " + odd in lines and b"cookie: a=" + odd in lines
    assert b"Sec-WebSocket-Protocol: chat" in lines
    cookies = [proxy.header_bytes(v) for v in handshake.response.headers.get_all("Set-Cookie")]
    assert cookies == [b"c=" + odd + b"; Path=/"]


def end_to_end(headers: proxy.Headers) -> proxy.Headers:
    drop = proxy.hop_by_hop(headers)
    return [(name.lower(), value) for name, value in headers if name.lower() not in drop]


async def _relayed(answer: bytes) -> tuple[list[tuple[bytes, bytes]], bytes]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(answer)
        await writer.drain()
        writer.close()

    sent: list[Message] = []

    async def receive() -> Message:
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")

    async def send(message: Message) -> None:
        sent.append(message)

    scope: dict[str, Any] = {"type": "http", "method": "GET", "path": "/", "query_string": b""}
    request_sent = False

    async def first_receive() -> Message:
        nonlocal request_sent
        if not request_sent:
            request_sent = True
            return {"type": "http.request", "body": b"", "more_body": False}
        return await receive()

    async with program(handle) as upstream:
        async with asyncio.timeout(10):
            await proxy.http(scope, first_receive, send, upstream, [(b"host", b"h")], end_to_end)
    start = sent[0]
    assert start["type"] == "http.response.start"
    body = b"".join(m.get("body", b"") for m in sent[1:])
    return list(start["headers"]), body


async def test_content_length_is_dropped_when_transfer_encoding_frames_the_answer() -> None:
    headers, body = await _relayed(
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n"
        b"X-Kept: 1\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    )
    assert body == b"hello"
    names = [name for name, _ in headers]
    assert b"content-length" not in names and b"transfer-encoding" not in names
    assert (b"x-kept", b"1") in headers


async def test_content_length_alone_is_kept() -> None:
    headers, body = await _relayed(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
    assert body == b"hello" and (b"content-length", b"5") in headers
