"""The reconciler: make instance rows agree with what the compute provider reports.

Runs at start-up and then every ``GENTITY_RECONCILE_INTERVAL_SECONDS``:

- a ``running`` instance whose machine is no longer running is marked ``error`` with the reason
  and restarted by its policy, and one whose agent is between restarts is ``restarting`` (see
  ``server.recovery``, whose watches see both at once; this pass starts them and catches what
  they missed); one whose guest answers unconfigured (its machine was restarted by its
  provider, not by us) gets its config again;
- an ``error`` instance whose automatic restart is due is started again;
- a transitional row (``starting``, ``stopping``…) whose operation lease has expired, e.g.
  because the server crashed mid-way, is completed or failed, never left hanging;
- an instance this server cannot reach (``ComputeProvider.unreachable``: a ``local`` instance
  of another host) is left alone, whatever its row says.

Several replicas may run it at once: every status change is a compare-and-set, so the first
replica to act wins and the others' changes are refused harmlessly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from gentity.guest import client as guest_client
from gentity.models import InstanceStatus as S
from gentity.providers.compute.base import (
    ComputeProvider,
    MachineState,
    ProviderError,
    ProviderUnavailable,
)
from gentity.server import recovery
from gentity.server.context import AppContext
from gentity.server.db.ids import utcnow
from gentity.server.db.orm import Instance
from gentity.server.services import dns, instances, operations
from gentity.server.services.instance_status import (
    RECONCILER,
    TRANSITIONAL,
    TransitionError,
    acting,
    set_status,
)

log = logging.getLogger(__name__)

SWEEP_INTERVAL_SECONDS = 600.0


async def reconcile_once(ctx: AppContext) -> None:
    with acting(RECONCILER):
        await _reconcile_all(ctx)


async def _reconcile_all(ctx: AppContext) -> None:
    async with ctx.db.session() as session:
        ids = list(
            await session.scalars(
                select(Instance.id).where(
                    Instance.destroyed_at.is_(None),
                    or_(
                        Instance.status.in_([S.RUNNING.value, *(s.value for s in TRANSITIONAL)]),
                        and_(Instance.status == S.ERROR.value, Instance.recover_at.is_not(None)),
                    ),
                )
            )
        )
    for instance_id in ids:
        # One session per instance: a failure (and its rollback) must not touch the others.
        async with ctx.db.session() as session:
            row = await session.get(Instance, instance_id)
            if row is None:
                continue
            try:
                await _reconcile(ctx, session, row)
            except TransitionError:
                pass  # someone else changed it first: fine
            except Exception:
                log.exception("reconciling instance %s failed", instance_id)


async def _reconcile(ctx: AppContext, session: AsyncSession, row: Instance) -> None:
    try:
        provider = instances.provider_for(ctx, row)
    except ProviderUnavailable:
        return  # another host's machine (or provider's): its own servers reconcile it
    status = S(row.status)
    if status is S.ERROR:
        await recovery.recover_due(ctx, row)
        return
    if recovery.watched(ctx, row):
        await _check_running(ctx, session, provider, row)
        return
    if status is S.RUNNING:
        return  # an operation here is about to change it
    if not operations.abandoned(ctx, row):
        return  # an operation is (probably) still under way somewhere
    log.warning("instance %s was left %s; finishing it", row.id, status.value)
    if status is S.DESTROYING:
        await instances.teardown(ctx, session, row)
    elif status is S.STOPPING:
        if row.provider_ref is not None:
            await provider.stop(instances.handle_of(row))
        await set_status(session, row, S.STOPPED, "stop completed by the reconciler")
        await session.commit()
    elif row.provider_ref is not None and await _guest_runs_agent(provider, ctx, row):
        await set_status(session, row, S.RUNNING, "start completed before an interruption")
        await session.commit()
    elif row.provider_ref is None:
        # A create interrupted before its machine's handle was saved: remove whatever it made
        # on disk. The row stays, in error, for its owner to see and delete.
        await provider.destroy_unrecorded(row.id)
        await set_status(
            session,
            row,
            S.ERROR,
            "interrupted",
            error_message="interrupted while being created; delete it and create it again",
        )
        await session.commit()
    else:
        with contextlib.suppress(ProviderError):
            await provider.stop(instances.handle_of(row))
        await set_status(
            session,
            row,
            S.ERROR,
            "interrupted",
            error_message=f"interrupted while {status.value}; start it again",
        )
        await session.commit()


async def _check_running(
    ctx: AppContext, session: AsyncSession, provider: ComputeProvider, row: Instance
) -> None:
    """A ``running`` row, or one whose agent is between restarts: what its watch would do."""
    seen = await provider.status(instances.handle_of(row))
    if seen.state.in_progress:
        return  # booting or stopping (e.g. a provider's own restart): not a failure
    if seen.state is not MachineState.RUNNING:
        await recovery.machine_down(ctx, session, row, seen)
        return
    if await instances.configure_if_rebooted(ctx, row):
        return
    if row.recovery_attempts and utcnow() - row.updated_at >= recovery.STABLE_RUN:
        row.recovery_attempts = 0
        await session.commit()
    try:
        health = await guest_client.health(
            provider.guest_endpoint(instances.handle_of(row)),
            instances.guest_secret(ctx, row),
            timeout=instances.HEALTH_TIMEOUT,
        )
    except guest_client.GuestError:
        health = None  # its watch (or the next pass) looks again
    if health is not None:
        await recovery.follow(ctx, session, row, health)
    if recovery.watched(ctx, row):
        recovery.watch(ctx, row.id)


async def _guest_runs_agent(provider: ComputeProvider, ctx: AppContext, row: Instance) -> bool:
    """Whether an interrupted start can be finished: the machine runs and its agent comes up.
    A server killed between booting the machine and configuring its guest left that guest
    waiting for its config: it gets it now, as the start would have sent it."""
    handle = instances.handle_of(row)
    if (await provider.status(handle)).state is not MachineState.RUNNING:
        return False
    await instances.configure_if_rebooted(ctx, row)
    try:
        health = await instances.wait_for_agent(
            provider.guest_endpoint(handle), instances.guest_secret(ctx, row)
        )
    except (guest_client.GuestError, ProviderError):
        return False
    return health.get("state") == "running"


async def sweep_outside(ctx: AppContext) -> None:
    """Remove what providers and DNS hold for instances that no longer exist (a create killed
    before its row knew the machine, a row removed by hand)."""
    async with ctx.db.session() as session:
        await dns.sweep(ctx, session)

    async def known() -> set[str]:
        async with ctx.db.session() as session:
            return set(
                await session.scalars(select(Instance.id).where(Instance.destroyed_at.is_(None)))
            )

    for provider in ctx.providers:
        try:
            removed = await provider.sweep(known)
        except ProviderError as exc:
            log.warning("sweeping the %s provider failed: %s", provider.name, exc)
            continue
        for what in removed:
            log.warning("%s: removed %s, which no instance owns", provider.name, what)


async def run_forever(ctx: AppContext) -> None:
    last_sweep = -SWEEP_INTERVAL_SECONDS
    while True:
        try:
            await reconcile_once(ctx)
        except Exception:
            log.exception("reconciler pass failed")
        # Orphans are rare (a create killed mid-way, a row removed by hand) and listing an
        # outside service's records costs requests against its rate limit: seldom is enough.
        if time.monotonic() - last_sweep >= SWEEP_INTERVAL_SECONDS:
            last_sweep = time.monotonic()
            try:
                await sweep_outside(ctx)
            except Exception:
                log.exception("sweeping outside services failed")
        await asyncio.sleep(ctx.settings.reconcile_interval_seconds)
