"""Server-sent events for log follows: keep-alives, disconnects, and an end on revocation."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractContextManager
from typing import Any

import anyio
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from gentity.server.services.logfeed import Follower
from gentity.server.services.logs import LogStream

log = logging.getLogger(__name__)

KEEPALIVE_SECONDS = 15.0


class EventStreamResponse(StreamingResponse):
    """A streaming response that stops as soon as the client disconnects.

    Starlette's own, under ASGI 2.4 servers, only notices a disconnect when its next write
    fails, which for a quiet log is up to a keep-alive interval later. Listening for the
    disconnect message as well ends the stream (and closes the log file) at once.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async with anyio.create_task_group() as group:

            async def stream() -> None:
                with contextlib.suppress(OSError):
                    await self.stream_response(send)
                group.cancel_scope.cancel()

            group.start_soon(stream)
            await self.listen_for_disconnect(receive)
            group.cancel_scope.cancel()


async def log_events(stream: LogStream, ended: asyncio.Event) -> AsyncIterator[str]:
    """One SSE event per log record, and a comment every 15 s so proxies keep the line open.

    The log stream is pumped by its own task into a queue, so waiting for the keep-alive timer
    never cancels the stream mid-read. The response ends cleanly (a complete chunked body, so
    the client sees an end and not a broken connection) when ``ended`` is set (the credential
    was revoked) or the log stream stops or fails. Starlette cancels this generator when the
    client goes away; the ``finally`` then stops the pump and closes the log file.
    """
    queue: asyncio.Queue[tuple[str, dict[str, str]]] = asyncio.Queue(maxsize=1000)

    async def pump() -> None:
        async for item in stream:
            await queue.put(item)

    pumping = asyncio.create_task(pump())
    stop = asyncio.create_task(ended.wait())
    getter: asyncio.Task[tuple[str, dict[str, str]]] | None = None
    try:
        yield "retry: 2000\n\n"
        while True:
            if getter is None:
                getter = asyncio.create_task(queue.get())
            done, _ = await asyncio.wait(
                (getter, stop, pumping),
                timeout=KEEPALIVE_SECONDS,
                return_when=asyncio.FIRST_COMPLETED,
            )
            if stop in done:
                return
            if getter in done:
                cursor, record = getter.result()
                getter = None
                data = json.dumps(record, separators=(",", ":"))
                # A record read while the instance was stopped has no cursor: no id, so the
                # client's Last-Event-ID stays that of the last record it can resume after.
                yield f"id: {cursor}\ndata: {data}\n\n" if cursor else f"data: {data}\n\n"
            elif pumping in done:
                if queue.empty():
                    if not pumping.cancelled() and pumping.exception() is not None:
                        log.warning("log stream failed", exc_info=pumping.exception())
                    return
            else:
                yield ": keep-alive\n\n"
    finally:
        for task in (getter, stop, pumping):
            if task is not None:
                task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await pumping
        await stream.aclose()  # type: ignore[attr-defined]


class FeedResponse(Response):
    """``logs?follow=1`` for a follower of an instance's shared feed (``services.logfeed``).

    A plain ASGI response rather than a :class:`StreamingResponse`: a busy feed wakes every
    follower several times a second, and a thousand followers make that the server's main
    work. So each wake-up costs one task step and one ``send`` of everything the follower has
    pending (the frames come encoded from the feed), with no generator chain, task group or
    per-chunk encoding between them; the disconnect is watched by a task that only wakes when
    the connection says something. A keep-alive comment goes out after ``KEEPALIVE_SECONDS``
    without a write.

    The stream ends when the feed ends the follower (its instance stopped or went away, or the
    client fell too far behind: it then reconnects with the id of the last record it got), when
    the client goes away, or when the ``ended`` event that ``watch`` yields is set (the
    credential was revoked).
    """

    media_type = "text/event-stream"

    def __init__(
        self,
        follower: Follower,
        watch: Callable[[], AbstractContextManager[asyncio.Event]],
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.follower = follower
        self.watch = watch
        self.status_code = 200
        self.background = None
        self.init_headers(headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        follower = self.follower
        wake = follower.wake
        loop = asyncio.get_running_loop()
        interval = KEEPALIVE_SECONDS
        last_write = loop.time()
        keepalive_due = False
        timer: asyncio.TimerHandle | None = None

        def tick() -> None:
            nonlocal timer, keepalive_due
            idle = loop.time() - last_write
            if idle >= interval:
                keepalive_due = True
                wake.set()
                idle = 0.0
            timer = loop.call_later(interval - idle, tick)

        def gone(listening: asyncio.Future[None]) -> None:
            # The client went away (or the server is shutting down): nothing more is written.
            if not listening.cancelled() and listening.exception() is not None:
                log.debug("a log follower's connection failed", exc_info=listening.exception())
            follower.finish()

        listener = asyncio.ensure_future(_disconnected(receive))
        listener.add_done_callback(gone)
        stop: asyncio.Future[Any] | None = None
        body: dict[str, Any] = {"type": "http.response.body", "body": b"", "more_body": True}
        try:
            with self.watch() as ended:
                stop = asyncio.ensure_future(ended.wait())
                stop.add_done_callback(lambda _: wake.set())
                timer = loop.call_later(interval, tick)
                await send(
                    {"type": "http.response.start", "status": 200, "headers": self.raw_headers}
                )
                await send({**body, "body": b"retry: 2000\n\n"})
                while not ended.is_set() and not listener.done():
                    data = follower.take()
                    if data:
                        last_write = loop.time()
                        await send({**body, "body": data})
                        continue
                    if follower.finished:
                        if follower.overflowed:
                            log.info("a log follower fell too far behind and was ended")
                        break
                    if keepalive_due:
                        keepalive_due = False
                        last_write = loop.time()
                        await send({**body, "body": b": keep-alive\n\n"})
                        continue
                    wake.clear()
                    await wake.wait()
                if not listener.done():
                    # A complete chunked body: the client sees an end, not a broken connection.
                    await send({**body, "more_body": False})
        except OSError:
            pass  # the client went away mid-write
        finally:
            if timer is not None:
                timer.cancel()
            if stop is not None:
                stop.cancel()
            listener.cancel()
            follower.close()


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
