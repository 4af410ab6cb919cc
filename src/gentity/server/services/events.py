"""An instance's status history (the events ``instance_status`` records): pages and a follow.

Events stay readable by the owner after the instance is destroyed, since that is when "what
happened to it" matters most. A follow polls the database (with a short session each time, so
an open stream holds no connection) because the change may have been made by another replica.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from gentity import models
from gentity.server.db.database import Database
from gentity.server.db.orm import Instance, InstanceEvent
from gentity.server.services.errors import NotFound

POLL_SECONDS = 1.0
"""How often a follow asks the database for new events: a change shows within about this."""


def to_wire(row: InstanceEvent) -> models.InstanceEvent:
    return models.InstanceEvent(
        id=row.id,
        time=row.created_at,
        from_status=models.InstanceStatus(row.from_status) if row.from_status else None,
        to_status=models.InstanceStatus(row.to_status),
        reason=row.reason,
        actor=row.actor,
    )


async def check_owned(db: AsyncSession, user_id: str, instance_id: str) -> None:
    """``NotFound`` unless the instance (live or destroyed) is the caller's."""
    owner = await db.scalar(select(Instance.user_id).where(Instance.id == instance_id))
    if owner != user_id:
        raise NotFound()


async def page(
    db: AsyncSession, instance_id: str, limit: int, before: int | None
) -> models.InstanceEventList:
    """Up to ``limit`` events older than ``before`` (all when None), newest first."""
    query = select(InstanceEvent).where(InstanceEvent.instance_id == instance_id)
    if before is not None:
        query = query.where(InstanceEvent.id < before)
    # One more than asked for says whether there is another page, without counting.
    rows = list(await db.scalars(query.order_by(InstanceEvent.id.desc()).limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    return models.InstanceEventList(
        events=[to_wire(row) for row in rows],
        next_before=rows[-1].id if more else None,
    )


async def cursor_before(db: AsyncSession, instance_id: str, count: int) -> int:
    """The cursor after which the ``count`` most recent events come (0 for all of them)."""
    ids = await db.scalars(
        select(InstanceEvent.id)
        .where(InstanceEvent.instance_id == instance_id)
        .order_by(InstanceEvent.id.desc())
        .limit(count + 1)
    )
    found = list(ids)
    return found[count] if len(found) > count else 0


async def follow(
    database: Database, instance_id: str, after: int, stop: asyncio.Event
) -> AsyncIterator[list[models.InstanceEvent]]:
    """Batches of events newer than ``after``, oldest first, one per poll (often empty, which
    lets the caller send keep-alives). Ends after the ``destroyed`` event, or when ``stop``
    is set."""
    while True:
        async with database.session() as db:
            # The status is read before the events: once it says destroyed, the destroyed
            # event (committed with it) is among the events read next.
            status = await db.scalar(select(Instance.status).where(Instance.id == instance_id))
            rows = await db.scalars(
                select(InstanceEvent)
                .where(InstanceEvent.instance_id == instance_id, InstanceEvent.id > after)
                .order_by(InstanceEvent.id)
            )
            batch = [to_wire(row) for row in rows]
        if batch:
            after = batch[-1].id
        yield batch
        if status is None or status == models.InstanceStatus.DESTROYED.value:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), POLL_SECONDS)
        if stop.is_set():
            return
