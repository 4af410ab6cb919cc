"""``/api/instances``: lifecycle and logs. Every route answers 404 for another user's instance."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Header, Query
from pydantic import WithJsonSchema
from starlette.responses import JSONResponse

from gentity import models
from gentity.server import idempotency
from gentity.server.auth import Auth, AuthFirstRoute, Conn, Ctx, Db, Principal
from gentity.server.context import AppContext
from gentity.server.openapi import errors
from gentity.server.params import MAX_CURSOR, parse_cursor, parse_flag, parse_int
from gentity.server.services import instances, logs
from gentity.server.services.logfeed import Follower
from gentity.server.services.logs import LogStream
from gentity.server.sse import EventStreamResponse, FeedResponse, log_events

router = APIRouter(prefix="/api/instances", tags=["instances"], route_class=AuthFirstRoute)

MAX_LOG_LINES = 1000


@router.get("", response_model=models.InstanceList)
async def list_instances(principal: Auth, ctx: Ctx, db: Conn) -> models.InstanceList:
    rows = await instances.list_for(db, principal.user.id)
    return models.InstanceList(instances=await instances.to_wire_with_health(ctx, rows))


# Parameters arrive as text and are parsed strictly by the handlers (gentity.server.params);
# the schemas below say what those parsers accept, so the document matches the wire.
IdempotencyHeader = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        description="Retry safely: the same key within 24 h gets the first request's answer",
    ),
    WithJsonSchema({"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[!-~]+$"}),
]
_CURSOR_SCHEMA = {"type": "integer", "minimum": 0, "maximum": MAX_CURSOR}


def _answer(answer: idempotency.Answer) -> JSONResponse:
    status, body = answer
    return JSONResponse(body, status_code=status)


@router.post(
    "",
    response_model=models.InstanceCreated,
    responses={
        202: {"model": models.InstanceCreated, "description": "With wait=0: created, starting"},
        **errors(409, 422, 502),
    },
)
async def create_instance(
    body: models.InstanceCreateRequest,
    principal: Auth,
    ctx: Ctx,
    idempotency_key: IdempotencyHeader = None,
    wait: Annotated[
        str | None,
        Query(
            description="0 (or false) to answer 202 as soon as the instance exists, while it "
            "starts (follow its log and events); by default the answer waits until it runs"
        ),
        WithJsonSchema({"anyOf": [{"type": "boolean"}, {"type": "integer", "enum": [0, 1]}]}),
    ] = None,
) -> JSONResponse:
    """Create an instance and block until its machine and agent are running (or, with
    ``wait=0``, answer ``202`` once it exists)."""
    key = idempotency.validate_key(idempotency_key)
    waiting = wait is None or parse_flag(wait, "wait")

    async def create() -> models.InstanceCreated:
        # A session of its own: the work may outlive this request (and its session).
        async with ctx.db.session() as session:
            with ctx.metrics.operation("create"):
                return await instances.create(ctx, session, principal.user.id, body, wait=waiting)

    return _answer(
        await idempotency.run_once(
            ctx,
            principal.user.id,
            key,
            "POST /api/instances",
            body,
            create,
            status=200 if waiting else 202,
        )
    )


@router.get("/{instance_id}", response_model=models.Instance)
async def get_instance(instance_id: str, principal: Auth, ctx: Ctx, db: Conn) -> models.Instance:
    row = await instances.read_owned(db, principal.user.id, instance_id)
    return (await instances.to_wire_with_health(ctx, [row]))[0]


@router.delete("/{instance_id}", response_model=models.Ok, responses=errors(409, 502))
async def delete_instance(instance_id: str, principal: Auth, ctx: Ctx, db: Db) -> models.Ok:
    """Destroy the machine and its volume."""
    row = await instances.get_owned(db, principal.user.id, instance_id)
    with ctx.metrics.operation("destroy"):
        await instances.destroy(ctx, db, row)
    return models.Ok()


@router.post("/{instance_id}/action", response_model=models.Ok, responses=errors(409, 422, 502))
async def instance_action(
    instance_id: str,
    body: models.InstanceActionRequest,
    principal: Auth,
    ctx: Ctx,
    db: Db,
    idempotency_key: IdempotencyHeader = None,
) -> JSONResponse:
    key = idempotency.validate_key(idempotency_key)
    await instances.get_owned(db, principal.user.id, instance_id)  # 404 before any key is used

    async def act() -> models.Ok:
        async with ctx.db.session() as session:
            fresh = await instances.get_owned(session, principal.user.id, instance_id)
            with ctx.metrics.operation(body.action.value):
                await instances.act(ctx, session, fresh, body.action)
        return models.Ok()

    scope = f"POST /api/instances/{instance_id}/action"
    return _answer(await idempotency.run_once(ctx, principal.user.id, key, scope, body, act))


@router.get(
    "/{instance_id}/logs",
    response_model=models.LogList,
    responses={200: {"content": {"text/event-stream": {}}}, **errors(409, 502)},
)
async def instance_logs(
    instance_id: str,
    principal: Auth,
    ctx: Ctx,
    db: Db,
    lines: Annotated[
        str | None,
        Query(description=f"How many recent lines (1-{MAX_LOG_LINES}, default 200)"),
        WithJsonSchema({"type": "integer", "minimum": 1, "maximum": MAX_LOG_LINES}),
    ] = None,
    follow: Annotated[
        str | None,
        Query(description="1 (or true) to stream new lines as text/event-stream"),
        WithJsonSchema({"anyOf": [{"type": "boolean"}, {"type": "integer", "enum": [0, 1]}]}),
    ] = None,
    cursor: Annotated[
        str | None,
        Query(description="With follow: start after this event id (from an earlier stream)"),
        WithJsonSchema(_CURSOR_SCHEMA),
    ] = None,
    last_event_id: Annotated[
        str | None,
        Header(alias="Last-Event-ID", description="With follow: resume after this event id"),
        WithJsonSchema(_CURSOR_SCHEMA),
    ] = None,
) -> models.LogList | EventStreamResponse | FeedResponse:
    """Recent log lines, oldest first; with ``follow=1`` a ``text/event-stream`` of new ones."""
    count = parse_int(lines, "lines", 1, MAX_LOG_LINES, default=200)
    following = parse_flag(follow, "follow")
    # Checked before anything opens: a bad cursor is a 400, not a stream that breaks later.
    resume = parse_cursor(last_event_id, "Last-Event-ID")
    cursor = parse_cursor(cursor, "cursor")
    row = await instances.get_owned(db, principal.user.id, instance_id)
    if not following:
        return models.LogList(logs=await logs.tail(ctx, row, count))
    # Resume after the last event the client saw; otherwise replay the last `lines` first.
    stream = await logs.follow(ctx, row, resume or cursor, count)
    headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    if isinstance(stream, Follower):
        # Registered for the whole stream, so that revoking its credential ends it.
        return FeedResponse(
            stream, lambda: ctx.credentials.watch(principal.credential, "logs"), headers
        )
    return EventStreamResponse(
        _follow(ctx, principal, stream), media_type="text/event-stream", headers=headers
    )


async def _follow(ctx: AppContext, principal: Principal, stream: LogStream) -> AsyncIterator[str]:
    """The SSE body, registered for the whole stream so that revoking its credential ends it."""
    with ctx.credentials.watch(principal.credential, "logs") as ended:
        async for chunk in log_events(stream, ended):
            yield chunk
