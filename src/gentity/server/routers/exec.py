"""``POST /api/instances/{id}/exec``: run a command beside the agent, answered whole or
streamed (``?stream=1``) as server-sent events.

Stream events, in order: ``stdout`` and ``stderr`` (``{"data": "..."}``, as output arrives),
then one ``exit`` (how it ended, as :class:`~gentity.models.ExecExit`); ``error``
(``{"error": "..."}``) instead of ``exit`` when the instance stops answering. A client that
disconnects kills the command.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Query, Request
from pydantic import WithJsonSchema

from gentity import models
from gentity.server.auth import Auth, AuthFirstRoute, Ctx
from gentity.server.errors import ApiError
from gentity.server.openapi import errors
from gentity.server.params import parse_flag
from gentity.server.services import exec as exec_service
from gentity.server.services.errors import DomainError
from gentity.server.sse import KEEPALIVE_SECONDS, EventStreamResponse

#: Logged for a one-shot exec whose client left before the end (nginx's code for it).
CLIENT_CLOSED = 499

router = APIRouter(prefix="/api/instances", tags=["instances"], route_class=AuthFirstRoute)


@router.post(
    "/{instance_id}/exec",
    response_model=models.ExecResult,
    responses={200: {"content": {"text/event-stream": {}}}, **errors(409, 502)},
)
async def exec_command(
    instance_id: str,
    body: models.ExecRequest,
    principal: Auth,
    ctx: Ctx,
    request: Request,
    stream: Annotated[
        str | None,
        Query(description="1 (or true) to stream stdout, stderr and exit as text/event-stream"),
        WithJsonSchema({"anyOf": [{"type": "boolean"}, {"type": "integer", "enum": [0, 1]}]}),
    ] = None,
) -> models.ExecResult | EventStreamResponse:
    """Run a command in a running instance, beside its agent, on pipes (not a terminal); stdout
    and stderr apart, each cut at 1 MiB (flagged), killed with its process tree after
    ``timeout`` seconds (default 60, at most 3600)."""
    streaming = parse_flag(stream, "stream")
    run = await exec_service.start(
        ctx, principal.user.id, instance_id, body, scope_instance_id=principal.scope_instance_id
    )
    if not streaming:
        return await _collect(request, run)
    return EventStreamResponse(
        _events(run),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


async def _collect(request: Request, run: exec_service.ExecRun) -> models.ExecResult:
    """The whole result; a client that leaves before it is ready kills the command."""
    collecting = asyncio.ensure_future(run.collect())
    left = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait((collecting, left), return_when=asyncio.FIRST_COMPLETED)
    finally:
        left.cancel()
        if not collecting.done():
            collecting.cancel()
            await run.close()
    if collecting.cancelled():  # nobody is there to read an answer; the status is for the log
        raise ApiError(CLIENT_CLOSED, "the client closed the connection before the command ended")
    return collecting.result()


async def _disconnected(request: Request) -> None:
    # The body has been read: the next message the server has for us is the disconnect.
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _events(run: exec_service.ExecRun) -> AsyncIterator[str]:
    """The SSE body: output as it comes, a comment when quiet for 15 s, then the end."""
    queue: asyncio.Queue[str | None] = asyncio.Queue(maxsize=64)

    async def pump() -> None:
        try:
            async for event in run.events():
                if isinstance(event, models.ExecExit):
                    await queue.put(_event("exit", event.model_dump_json(by_alias=True)))
                else:
                    await queue.put(_event(event[0], json.dumps({"data": event[1]})))
        except DomainError as exc:
            await queue.put(_event("error", json.dumps({"error": exc.message})))
        await queue.put(None)

    pumping = asyncio.create_task(pump())
    try:
        while True:
            try:
                async with asyncio.timeout(KEEPALIVE_SECONDS):
                    item = await queue.get()
            except TimeoutError:
                yield ": keep-alive\n\n"
                continue
            if item is None:
                return
            yield item
    finally:
        # Here also when the client left: closing the run kills the command.
        pumping.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await pumping
        await run.close()


def _event(name: str, data: str) -> str:
    return f"event: {name}\ndata: {data}\n\n"
