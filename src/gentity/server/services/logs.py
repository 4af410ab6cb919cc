"""An instance's log: from its guest while it runs (the same on every provider), from its
provider when it does not."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator

from gentity import models
from gentity.guest import client as guest_client
from gentity.server.context import AppContext
from gentity.server.db.orm import Instance
from gentity.server.services.errors import Conflict, UpstreamFailed
from gentity.server.services.instances import guest_secret, guest_serves, handle_of, provider_for
from gentity.server.services.logfeed import Follower, Source

LogStream = AsyncIterator[tuple[str, dict[str, str]]]
"""``(cursor, record)`` pairs as the guest streams them (``""`` for a record with none)."""

#: How often a follower of a stopped instance looks whether it runs again.
STOPPED_POLL_SECONDS = 1.0


async def tail(ctx: AppContext, row: Instance, lines: int) -> list[models.LogLine]:
    """The last ``lines`` records, oldest first; none before the instance has a machine."""
    if row.provider_ref is None:
        return []
    provider, handle = provider_for(ctx, row), handle_of(row)
    records: list[dict[str, str]] | None = None
    if guest_serves(ctx, row):
        endpoint = provider.guest_endpoint(handle)
        try:
            records, _ = await guest_client.logs(endpoint, guest_secret(ctx, row), lines=lines)
        except guest_client.GuestError:
            # Its guest went away without the row knowing yet: the machine's log is still
            # there for the provider to read.
            records = None
    if records is None:
        records = await provider.tail_stopped(handle, lines)
    return [models.LogLine.model_validate(r) for r in records]


async def follow(
    ctx: AppContext, row: Instance, cursor: str | None, lines: int
) -> LogStream | Follower:
    """New records from ``cursor`` on; without one, the last ``lines`` records first.

    A running instance's guest streams its log. A stopped one's stream gives what its provider
    still has (without a cursor), then waits until the instance runs again and goes on from its
    guest; it ends when the instance is destroyed. A cursor from before resumes exactly once the
    instance runs (the log is on its volume).

    A running instance's followers share one stream from its guest: the answer is then a
    :class:`~gentity.server.services.logfeed.Follower` of its feed."""
    if row.provider_ref is None:
        raise Conflict("the instance has no machine yet")
    if not guest_serves(ctx, row):
        return _until_running(ctx, row, cursor, lines)
    endpoint = provider_for(ctx, row).guest_endpoint(handle_of(row))
    source = Source(endpoint, guest_secret(ctx, row))
    try:
        return await ctx.logfeeds.follow(
            row.id, source, None if cursor is None else int(cursor), lines
        )
    except guest_client.GuestError as exc:
        raise UpstreamFailed(str(exc).replace(f" at {endpoint.address}", "")) from exc


async def _from_guest(ctx: AppContext, row: Instance, cursor: str | None, lines: int) -> LogStream:
    endpoint = provider_for(ctx, row).guest_endpoint(handle_of(row))
    try:
        return await guest_client.follow(
            endpoint,
            guest_secret(ctx, row),
            cursor=cursor,
            lines=None if cursor is not None else lines,
        )
    except guest_client.GuestError as exc:
        # Said without the guest's address: that is the provider's business, not the user's.
        raise UpstreamFailed(str(exc).replace(f" at {endpoint.address}", "")) from exc


async def _until_running(
    ctx: AppContext, row: Instance, cursor: str | None, lines: int
) -> AsyncGenerator[tuple[str, dict[str, str]]]:
    if cursor is None:
        for record in await provider_for(ctx, row).tail_stopped(handle_of(row), lines):
            yield "", record
    while True:
        await asyncio.sleep(STOPPED_POLL_SECONDS)
        # A short session per look: a stream never holds a database connection.
        async with ctx.db.session() as session:
            current = await session.get(Instance, row.id)
        if current is None or current.destroyed_at is not None:
            return
        if guest_serves(ctx, current):
            break
    # Records written while it booted (before this cursor-less follow began) were not read.
    stream = await _from_guest(ctx, current, cursor, 0 if cursor is None else lines)
    async for item in stream:
        yield item
