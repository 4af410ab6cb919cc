"""Following logs over SSE: parsing, resuming after a drop without repeats, stopping."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Callable, Iterator

import httpx
import pytest

from gentity.client import ApiConnectionError, ApiError, AsyncClient, Client
from gentity.client.sse import Backoff, Event, SSEDecoder

URL = "http://gentity.test"
SSE = {"content-type": "text/event-stream"}


def frame(n: int) -> bytes:
    record = {"timestamp": f"t{n}", "level": "info", "message": f"line {n}"}
    return f"id: c{n}\ndata: {json.dumps(record)}\n\n".encode()


class Dropping(httpx.SyncByteStream, httpx.AsyncByteStream):
    """Sends ``chunks``, then, if ``drop``, breaks the connection like a dying proxy would."""

    def __init__(self, chunks: list[bytes], drop: bool = True) -> None:
        self.chunks = chunks
        self.drop = drop
        self.closed = False

    def __iter__(self) -> Iterator[bytes]:
        yield from self.chunks
        if self.drop:
            raise httpx.RemoteProtocolError("peer closed connection")

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            yield chunk
        if self.drop:
            raise httpx.ReadError("connection reset")

    def close(self) -> None:
        self.closed = True

    async def aclose(self) -> None:
        self.closed = True


def server(
    streams: list[httpx.Response], seen: list[httpx.Request]
) -> Callable[[httpx.Request], httpx.Response]:
    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return streams.pop(0)

    return handle


def test_decoder() -> None:
    decoder = SSEDecoder()
    lines = [
        "retry: 2000",
        "",
        ": keep-alive",
        "",
        "id: 7",
        "data: {",
        "data:  }",
        "",
        "id: 8",
        "",
    ]
    events = [e for line in lines if (e := decoder.feed(line)) is not None]
    # A multi-line data field joins with newlines; an id-only event still moves the cursor.
    assert events == [Event("{\n }", "7"), Event("", "8")]


def test_backoff_grows_with_jitter_and_resets() -> None:
    backoff = Backoff(first=0.5, cap=5)
    delays = [backoff.next_delay() for _ in range(6)]
    for delay, ceiling in zip(delays, [0.5, 1, 2, 4, 5, 5], strict=True):
        assert ceiling / 2 <= delay <= ceiling
    backoff.reset()
    assert backoff.next_delay() <= 0.5


def test_resumes_after_a_drop_without_repeating() -> None:
    first = Dropping([b"retry: 2000\n\n", frame(1), b": keep-alive\n\n", frame(2)])
    second = Dropping([frame(3), frame(4)], drop=False)
    seen: list[httpx.Request] = []
    handler = server(
        [
            httpx.Response(200, headers=SSE, stream=first),
            httpx.Response(200, headers=SSE, stream=second),
        ],
        seen,
    )
    with Client(URL, "gn_live_x", transport=httpx.MockTransport(handler)) as c:
        stream = c.follow_logs("i1", lines=10, reconnect_delay=0.01)
        messages = [next(stream).message for _ in range(4)]
        assert stream.last_event_id == "c4"
        stream.close()
    assert messages == ["line 1", "line 2", "line 3", "line 4"]
    assert first.closed and second.closed
    assert seen[0].url.params["follow"] == "1" and seen[0].url.params["lines"] == "10"
    assert "last-event-id" not in seen[0].headers
    assert seen[0].headers["accept"] == "text/event-stream"
    # The reconnect names the last line seen, and no longer asks for history.
    assert seen[1].headers["last-event-id"] == "c2"
    assert "lines" not in seen[1].url.params


def test_retries_a_restarting_server_then_gives_up() -> None:
    seen: list[httpx.Request] = []
    answers = [httpx.Response(200, headers=SSE, stream=Dropping([frame(1)]))]
    answers += [httpx.Response(503, json={"error": "restarting"}) for _ in range(3)]
    with Client(URL, transport=httpx.MockTransport(server(answers, seen))) as c:
        stream = c.follow_logs("i1", max_reconnects=3, reconnect_delay=0.001)
        assert next(stream).message == "line 1"
        with pytest.raises(ApiConnectionError, match=r"log stream lost \(restarting \(503\)\)"):
            next(stream)
    assert len(seen) == 4
    assert all(r.headers["last-event-id"] == "c1" for r in seen[1:])


def test_first_connection_failures_are_not_retried() -> None:
    def refused(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    with (
        Client(URL, transport=httpx.MockTransport(refused)) as c,
        pytest.raises(ApiConnectionError, match=re.escape(f"cannot reach {URL}")),
    ):
        next(c.follow_logs("i1"))
    for status, body in ((404, "Not Found"), (401, "Unauthorized")):
        answer = httpx.Response(status, json={"error": body})
        with Client(URL, transport=httpx.MockTransport(lambda _, a=answer: a)) as c:
            with pytest.raises(ApiError) as caught:
                next(c.follow_logs("i1"))
            assert caught.value.status == status
    html = httpx.Response(200, text="<html>", headers={"content-type": "text/html"})
    with (
        Client(URL, transport=httpx.MockTransport(lambda _: html)) as c,
        pytest.raises(ApiError, match="expected an event stream"),
    ):
        next(c.follow_logs("i1"))


def test_ends_when_the_instance_is_deleted_and_raises_when_the_token_is_revoked() -> None:
    def run(final: httpx.Response) -> list[str]:
        answers = [httpx.Response(200, headers=SSE, stream=Dropping([frame(1)])), final]
        with Client(URL, transport=httpx.MockTransport(server(answers, []))) as c:
            return [r.message for r in c.follow_logs("i1", reconnect_delay=0.001)]

    assert run(httpx.Response(404, json={"error": "Not Found"})) == ["line 1"]
    with pytest.raises(ApiError, match=r"Unauthorized \(401\)"):
        run(httpx.Response(401, json={"error": "Unauthorized"}))


def test_breaking_out_closes_the_connection() -> None:
    body = Dropping([frame(1), frame(2)], drop=False)
    answer = httpx.Response(200, headers=SSE, stream=body)
    with Client(URL, transport=httpx.MockTransport(lambda _: answer)) as c:
        with c.follow_logs("i1") as stream:
            for record in stream:
                assert record.message == "line 1"
                break
        assert body.closed


def test_async_resumes_after_a_drop() -> None:
    seen: list[httpx.Request] = []
    answers = [
        httpx.Response(200, headers=SSE, stream=Dropping([frame(1), frame(2)])),
        httpx.Response(200, headers=SSE, stream=Dropping([frame(3)], drop=False)),
    ]

    async def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answers.pop(0)

    async def main() -> list[str]:
        async with AsyncClient(URL, transport=httpx.MockTransport(handle)) as c:
            got = []
            async with c.follow_logs("i1", reconnect_delay=0.01) as stream:
                async for record in stream:
                    got.append(record.message)
                    if len(got) == 3:
                        break
                assert stream.last_event_id == "c3"
            return got

    assert asyncio.run(main()) == ["line 1", "line 2", "line 3"]
    assert seen[1].headers["last-event-id"] == "c2"
