"""``/api/instances``: lifecycle and logs. Every route answers 404 for another user's instance."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Annotated

import anyio
from fastapi import APIRouter, Header, Query, Request
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from gentity import models
from gentity.server.auth import Auth, Ctx, Db
from gentity.server.errors import ApiError
from gentity.server.services import instances

router = APIRouter(prefix="/api/instances", tags=["instances"])

MAX_LOG_LINES = 1000
KEEPALIVE_SECONDS = 15.0


@router.get("", response_model=models.InstanceList)
async def list_instances(principal: Auth, db: Db) -> models.InstanceList:
    rows = await instances.list_for(db, principal.user.id)
    return models.InstanceList(instances=[instances.to_wire(r) for r in rows])


@router.post("", response_model=models.InstanceCreated)
async def create_instance(
    body: models.InstanceCreateRequest, principal: Auth, ctx: Ctx, db: Db
) -> models.InstanceCreated:
    """Create an instance and block until its machine and agent are running."""
    return await instances.create(ctx, db, principal.user.id, body)


@router.get("/{instance_id}", response_model=models.Instance)
async def get_instance(instance_id: str, principal: Auth, db: Db) -> models.Instance:
    return instances.to_wire(await instances.get_owned(db, principal.user.id, instance_id))


@router.delete("/{instance_id}", response_model=models.Ok)
async def delete_instance(instance_id: str, principal: Auth, ctx: Ctx, db: Db) -> models.Ok:
    """Destroy the machine and its volume."""
    row = await instances.get_owned(db, principal.user.id, instance_id)
    await instances.destroy(ctx, db, row)
    return models.Ok()


@router.post("/{instance_id}/action", response_model=models.Ok)
async def instance_action(
    instance_id: str, body: models.InstanceActionRequest, principal: Auth, ctx: Ctx, db: Db
) -> models.Ok:
    row = await instances.get_owned(db, principal.user.id, instance_id)
    await instances.act(ctx, db, row, body.action)
    return models.Ok()


def _parse_lines(raw: str | None) -> int:
    if raw is None:
        return 200
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LOG_LINES:
        raise ApiError(400, f"lines: must be a whole number from 1 to {MAX_LOG_LINES}")
    return int(raw)


def _parse_follow(raw: str | None) -> bool:
    if raw is None:
        return False
    value = raw.lower()
    if value not in ("0", "1", "true", "false"):
        raise ApiError(400, "follow: must be 1 or 0")
    return value in ("1", "true")


@router.get(
    "/{instance_id}/logs",
    response_model=models.LogList,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def instance_logs(
    instance_id: str,
    principal: Auth,
    ctx: Ctx,
    db: Db,
    request: Request,
    lines: Annotated[str | None, Query(description="How many recent lines (1-1000)")] = None,
    follow: Annotated[str | None, Query(description="1 to stream new lines (SSE)")] = None,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
) -> models.LogList | EventStreamResponse:
    """Recent log lines, oldest first; with ``follow=1`` a ``text/event-stream`` of new ones."""
    count = _parse_lines(lines)
    following = _parse_follow(follow)
    row = await instances.get_owned(db, principal.user.id, instance_id)
    if ctx.compute is None or row.provider_ref is None:
        if following:
            raise ApiError(409, "the instance has no machine yet")
        return models.LogList(logs=[])
    handle = instances.handle_of(row)
    if not following:
        records = await ctx.compute.tail_logs(handle, count)
        return models.LogList(logs=[models.LogLine.model_validate(r) for r in records])
    # Resume after the last event the client saw; otherwise replay the last `lines` first.
    cursor = last_event_id or request.query_params.get("cursor")
    if cursor is None:
        cursor = await ctx.compute.log_cursor_before(handle, count)
    stream = ctx.compute.follow_logs(handle, cursor)
    return EventStreamResponse(
        _sse(stream),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


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


async def _sse(stream: AsyncIterator[tuple[str, dict[str, str]]]) -> AsyncIterator[str]:
    """One SSE event per log record, and a comment every 15 s so proxies keep the line open.

    The log stream is pumped by its own task into a queue, so waiting for the keep-alive timer
    never cancels the stream mid-read. Starlette cancels this generator when the client goes
    away; the ``finally`` then stops the pump and closes the log file.
    """
    queue: asyncio.Queue[tuple[str, dict[str, str]]] = asyncio.Queue(maxsize=1000)

    async def pump() -> None:
        async for item in stream:
            await queue.put(item)

    task = asyncio.create_task(pump())
    try:
        yield "retry: 2000\n\n"
        while True:
            try:
                cursor, record = await asyncio.wait_for(queue.get(), KEEPALIVE_SECONDS)
            except TimeoutError:
                if task.done():
                    task.result()  # surface a failure of the log stream
                yield ": keep-alive\n\n"
                continue
            yield f"id: {cursor}\ndata: {json.dumps(record, separators=(',', ':'))}\n\n"
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        await stream.aclose()  # type: ignore[attr-defined]
