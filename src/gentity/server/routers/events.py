"""``/api/instances/{id}/events``: an instance's status history, as pages or a live stream.

Only the owner sees it (404 otherwise, as for every instance route); unlike the other instance
routes it still answers after the instance is destroyed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Header, Query
from pydantic import WithJsonSchema

from gentity import models
from gentity.server import sse
from gentity.server.auth import Auth, AuthFirstRoute, Ctx, Db, Principal
from gentity.server.context import AppContext
from gentity.server.errors import ApiError
from gentity.server.params import parse_flag, parse_int, whole_number
from gentity.server.services import events
from gentity.server.sse import EventStreamResponse

router = APIRouter(prefix="/api/instances", tags=["instances"], route_class=AuthFirstRoute)

MAX_EVENTS = 200
DEFAULT_EVENTS = 50
MAX_EVENT_ID = 2**63 - 1
"""Event ids are 64-bit integers on PostgreSQL (and SQLite)."""

_EVENT_ID_SCHEMA = {"type": "integer", "minimum": 0, "maximum": MAX_EVENT_ID}


def _event_id(raw: str | None, name: str) -> int | None:
    if raw is None:
        return None
    value = whole_number(raw, 0, MAX_EVENT_ID)
    if value is None:
        raise ApiError(400, f"{name}: must be an event id (a whole number)")
    return value


@router.get(
    "/{instance_id}/events",
    response_model=models.InstanceEventList,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def instance_events(
    instance_id: str,
    principal: Auth,
    ctx: Ctx,
    db: Db,
    limit: Annotated[
        str | None,
        Query(
            description=f"How many events (1-{MAX_EVENTS}, default {DEFAULT_EVENTS}); with "
            "follow and no cursor, how many recent ones to send first"
        ),
        WithJsonSchema({"type": "integer", "minimum": 1, "maximum": MAX_EVENTS}),
    ] = None,
    before: Annotated[
        str | None,
        Query(description="Only events older than this id (the previous page's nextBefore)"),
        WithJsonSchema(_EVENT_ID_SCHEMA),
    ] = None,
    follow: Annotated[
        str | None,
        Query(description="1 (or true) to stream events as text/event-stream, oldest first"),
        WithJsonSchema({"anyOf": [{"type": "boolean"}, {"type": "integer", "enum": [0, 1]}]}),
    ] = None,
    after: Annotated[
        str | None,
        Query(description="With follow: start after this event id"),
        WithJsonSchema(_EVENT_ID_SCHEMA),
    ] = None,
    last_event_id: Annotated[
        str | None,
        Header(alias="Last-Event-ID", description="With follow: resume after this event id"),
        WithJsonSchema(_EVENT_ID_SCHEMA),
    ] = None,
) -> models.InstanceEventList | EventStreamResponse:
    """Status changes, newest first, ``limit`` per page; with ``follow=1`` a
    ``text/event-stream`` of them that ends once the instance is destroyed."""
    count = parse_int(limit, "limit", 1, MAX_EVENTS, default=DEFAULT_EVENTS)
    older_than = _event_id(before, "before")
    following = parse_flag(follow, "follow")
    resume = _event_id(last_event_id, "Last-Event-ID")
    start = _event_id(after, "after")
    await events.check_owned(db, principal.user.id, instance_id)
    if not following:
        return await events.page(db, instance_id, count, older_than)
    if resume is not None:
        cursor = resume
    elif start is not None:
        cursor = start
    else:
        cursor = await events.cursor_before(db, instance_id, count)
    return EventStreamResponse(
        _stream(ctx, principal, instance_id, cursor),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


async def _stream(
    ctx: AppContext, principal: Principal, instance_id: str, after: int
) -> AsyncIterator[str]:
    """One SSE event per status change, a comment when quiet for 15 s so proxies keep the line
    open; ends after the destroyed event, or when the credential stops being valid."""
    loop = asyncio.get_running_loop()
    with ctx.credentials.watch(principal.credential, "events") as ended:
        yield "retry: 2000\n\n"
        quiet_since = loop.time()
        async for batch in events.follow(ctx.db, instance_id, after, ended):
            for event in batch:
                data = event.model_dump_json(by_alias=True)
                yield f"id: {event.id}\ndata: {data}\n\n"
            if batch:
                quiet_since = loop.time()
            elif loop.time() - quiet_since >= sse.KEEPALIVE_SECONDS:
                yield ": keep-alive\n\n"
                quiet_since = loop.time()
