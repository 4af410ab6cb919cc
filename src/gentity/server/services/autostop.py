"""Auto-stop: stop a running instance that has been idle for longer than its
``autoStopMinutes``.

Every ``GENTITY_AUTO_STOP_CHECK_SECONDS`` each running instance with auto-stop on is asked
(through its guest's ``health``) when it was last used: the agent's terminal input or output,
or work a client asked of its guest. That time is written to the row (``last_activity_at``,
only ever forward), so that the API shows ``autoStopAt`` without asking any guest. Becoming
``running`` counts as activity too (see ``instance_status.set_status``).

An instance past its ``autoStopAt`` is stopped by an operation like a user's stop, with the
reason ``idle`` on its events and the actor ``system``. The operation decides again on the row
as it reads it then, so activity another replica recorded meanwhile, or a stop and start by
the user, keeps the instance running; and of several replicas that decide to stop it, the
compare-and-set status change lets one win and the others give up without a word.

An instance whose guest does not answer is not stopped on a guess: there is no telling whether
it is in use, and a machine that died is the reconciler's business.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from gentity.guest import client as guest_client
from gentity.models import InstanceStatus as S
from gentity.providers.compute.base import ProviderError, ProviderUnavailable
from gentity.server.context import AppContext
from gentity.server.db.ids import utcnow
from gentity.server.db.orm import Instance
from gentity.server.services import instances, operations
from gentity.server.services.errors import Conflict
from gentity.server.services.instance_status import SYSTEM, TransitionError, acting, set_status

log = logging.getLogger(__name__)

IDLE = "idle"
"""The reason on the events of an idle instance's stop."""

#: Guests asked at once; each answers within HEALTH_TIMEOUT or is skipped until the next check.
CHECK_CONCURRENCY = 16
HEALTH_TIMEOUT = 5.0


def minute(ctx: AppContext) -> timedelta:
    """How long an auto-stop minute lasts (60 s but in tests)."""
    return timedelta(seconds=ctx.settings.auto_stop_minute_seconds)


async def check_once(ctx: AppContext) -> int:
    """Record the activity of every running instance with auto-stop on, and stop the idle
    ones. Returns how many this call stopped."""
    with acting(SYSTEM):
        async with ctx.db.session() as session:
            ids = list(
                await session.scalars(
                    select(Instance.id).where(
                        Instance.destroyed_at.is_(None),
                        Instance.status == S.RUNNING.value,
                        Instance.auto_stop_minutes > 0,
                    )
                )
            )
        limit = asyncio.Semaphore(CHECK_CONCURRENCY)

        async def one(instance_id: str) -> bool:
            async with limit:
                try:
                    return await _check(ctx, instance_id)
                except Exception:
                    log.exception("checking instance %s for idleness failed", instance_id)
                    return False

        return sum(await asyncio.gather(*(one(i) for i in ids)))


async def _check(ctx: AppContext, instance_id: str) -> bool:
    if operations.in_flight_here(ctx, instance_id):
        return False  # being started, stopped or destroyed right now
    # No transaction stays open while the guest is asked (a slow guest must not pin a pooled
    # connection, nor SQLite's snapshot).
    async with ctx.db.session() as session:
        row = await session.get(Instance, instance_id)
        if row is None or row.status != S.RUNNING or row.provider_ref is None:
            return False
        try:
            endpoint = instances.provider_for(ctx, row).guest_endpoint(instances.handle_of(row))
        except (ProviderUnavailable, ProviderError):
            return False  # e.g. another host's instance: its own servers watch it
        secret = instances.guest_secret(ctx, row)
    try:
        health = await guest_client.health(endpoint, secret, timeout=HEALTH_TIMEOUT)
    except (guest_client.GuestError, ProviderError):
        return False
    seen = parse_activity(health.get("lastActivity"))
    async with ctx.db.session() as session:
        row = await session.get(Instance, instance_id)
        if row is None:
            return False
        if seen is not None:
            await record_activity(session, row, seen)
        deadline = instances.auto_stop_at(row, minute(ctx))
        if deadline is None or utcnow() < deadline:
            return False
    return await stop_if_idle(ctx, instance_id)


def parse_activity(value: object) -> datetime | None:
    """The guest's ``lastActivity`` (``2026-11-29T19:00:00.123Z``), or None when it is absent
    or not such a time. The guest runs inside the instance: a time in the future is taken as
    now, so a lying guest can keep its own instance running but cannot do more than use it."""
    if not isinstance(value, str) or len(value) > 40:
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        return None
    if when.tzinfo is None:
        return None
    return min(when, utcnow())


async def record_activity(session: AsyncSession, row: Instance, seen: datetime) -> None:
    """Move the row's ``last_activity_at`` forward to ``seen``; never back (another replica
    may have recorded a later one)."""
    if row.last_activity_at is not None and seen <= row.last_activity_at:
        return
    await session.execute(
        update(Instance)
        .where(
            Instance.id == row.id,
            or_(Instance.last_activity_at.is_(None), Instance.last_activity_at < seen),
        )
        .values(last_activity_at=seen)
        .execution_options(synchronize_session=False)
    )
    await session.commit()
    await session.refresh(row)


async def stop_if_idle(ctx: AppContext, instance_id: str) -> bool:
    """Stop the instance if it is running and past its ``autoStopAt`` as its row says now.
    Returns whether this call stopped it; a lost race with anyone else's change is False."""
    stopped = False

    async def operate(session: AsyncSession, inst: Instance) -> None:
        nonlocal stopped
        deadline = instances.auto_stop_at(inst, minute(ctx))
        if deadline is None or utcnow() < deadline:
            return  # used (or started) since it was checked
        await set_status(session, inst, S.STOPPING, IDLE)
        await session.commit()
        log.info("instance %s: idle since %s; stopping it", inst.id, inst.last_activity_at)
        await instances.provider_for(ctx, inst).stop(instances.handle_of(inst))
        await set_status(session, inst, S.STOPPED, IDLE)
        await session.commit()
        stopped = True

    try:
        failure = await operations.run_operation(ctx, instance_id, operate)
    except (TransitionError, Conflict, ProviderUnavailable):
        return False
    return stopped and failure is None


async def run_forever(ctx: AppContext) -> None:
    while True:
        await asyncio.sleep(ctx.settings.auto_stop_check_seconds)
        try:
            await check_once(ctx)
        except Exception:
            log.exception("auto-stop check failed")
