"""The reconciler: make instance rows agree with what the compute provider reports.

Runs at start-up and then every ``GENTITY_RECONCILE_INTERVAL_SECONDS``:

- a ``running`` instance whose machine is no longer running is marked ``error`` with the reason
  and restarted by its policy, and one whose agent is between restarts is ``restarting`` (see
  ``server.recovery``, whose watches see both at once; this pass starts them and catches what
  they missed); one whose guest answers unconfigured (its machine was restarted by its
  provider, not by us) gets its config again, from its watch or, unwatched, from this pass;
- an ``error`` instance whose automatic restart is due is started again;
- a transitional row (``starting``, ``stopping``…) whose operation lease has expired, e.g.
  because the server crashed mid-way, is completed or failed, never left hanging;
- an instance this server cannot reach (``ComputeProvider.unreachable``: a ``local`` instance
  of another host) is left alone, whatever its row says.

A pass costs what changed, not what exists: one query reads every active row, each provider
answers for all its machines in one batch (``ComputeProvider.statuses``), and only an instance
with something to do gets a session of its own (at most ``PASS_CONCURRENCY`` at once). A
running instance whose guest this server watches needs no guest call: its watch follows it.

Several replicas may run it at once: every status change is a compare-and-set, so the first
replica to act wins and the others' changes are refused harmlessly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from gentity.guest import client as guest_client
from gentity.models import InstanceStatus as S
from gentity.providers.compute.base import (
    ComputeProvider,
    MachineState,
    MachineStatus,
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


PASS_CONCURRENCY = 16
"""Instances acted on at once in a pass (a guest asked, a row written, an operation finished):
enough to get through thousands in seconds, few enough to keep to the database pool."""


@dataclass
class PassReport:
    """What one pass did, for its log line and the ``reconcile`` metrics."""

    rows: int = 0
    """Instances the pass looked at (running, transitional, or with a restart due)."""
    checked: int = 0
    """Machines whose status was asked of their provider."""
    acted: int = 0
    """Instances the pass did more than look at: a guest asked, a row written, an operation
    finished."""
    seconds: float = 0.0


async def reconcile_once(ctx: AppContext) -> PassReport:
    with acting(RECONCILER):
        started = time.perf_counter()
        report = await _reconcile_all(ctx)
        report.seconds = time.perf_counter() - started
    ctx.metrics.reconcile.observe(report.seconds)
    log.log(
        logging.INFO if report.acted or report.seconds >= 1 else logging.DEBUG,
        "reconciler pass: %d instances, %d machine statuses, %d acted on, in %.3f s",
        report.rows,
        report.checked,
        report.acted,
        report.seconds,
    )
    return report


async def _reconcile_all(ctx: AppContext) -> PassReport:
    """Read every candidate row in one query, ask each provider for its machines' statuses in
    one batch, and act (with a session of its own per instance) only where something is to be
    done: a steady fleet costs one query and a few provider calls, and writes nothing."""
    async with ctx.db.session() as session:
        rows = list(
            await session.scalars(
                select(Instance).where(
                    Instance.destroyed_at.is_(None),
                    or_(
                        Instance.status.in_([S.RUNNING.value, *(s.value for s in TRANSITIONAL)]),
                        and_(Instance.status == S.ERROR.value, Instance.recover_at.is_not(None)),
                    ),
                )
            )
        )
    report = PassReport(rows=len(rows))
    to_check: dict[ComputeProvider, list[Instance]] = defaultdict(list)
    to_finish: list[Instance] = []
    for row in rows:
        try:
            provider = instances.provider_for(ctx, row)
        except ProviderUnavailable:
            continue  # another host's machine (or provider's): its own servers reconcile it
        if row.status == S.ERROR.value:
            await recovery.recover_due(ctx, row)
        elif recovery.watched(ctx, row):
            to_check[provider].append(row)
        elif row.status != S.RUNNING.value and operations.abandoned(ctx, row):
            to_finish.append(row)
        # else: running with an operation about to change it, or an operation (probably)
        # still under way somewhere
    limit = asyncio.Semaphore(PASS_CONCURRENCY)
    work: list[Coroutine[Any, Any, bool]] = []
    for provider, checked in to_check.items():
        try:
            seen = await provider.statuses([instances.handle_of(row) for row in checked])
        except Exception:
            # A provider's failure must not stop the pass for the others' instances.
            log.exception("asking the %s provider for its machines' statuses failed", provider.name)
            continue
        report.checked += len(checked)
        for row, status in zip(checked, seen, strict=True):
            if isinstance(status, ProviderError):
                log.warning("reconciling instance %s: %s", row.id, status)
            elif _needs_a_look(ctx, row, status):
                work.append(_guarded(limit, row.id, _check_running(ctx, provider, row.id, status)))
    work += [_guarded(limit, row.id, _finish(ctx, row.id)) for row in to_finish]
    report.acted = sum(await asyncio.gather(*work))
    return report


def _needs_a_look(ctx: AppContext, row: Instance, seen: MachineStatus) -> bool:
    """Whether a watched row whose machine is ``seen`` needs more than that: a machine that is
    not running, a guest no watch here follows, a count of automatic restarts to reset."""
    if seen.state.in_progress:
        return False  # booting or stopping (e.g. a provider's own restart): not a failure
    if seen.state is not MachineState.RUNNING:
        return True
    if not _followed(ctx, row.id):
        return True
    return bool(row.recovery_attempts) and utcnow() - row.updated_at >= recovery.STABLE_RUN


def _followed(ctx: AppContext, instance_id: str) -> bool:
    """Whether a live watch here holds a configured guest's latest answer. A guest that went
    away, or came back unconfigured (its machine rebooted by its provider), is looked at by the
    pass too, not left to the watch's retry alone."""
    return recovery.watching(ctx, instance_id) and instance_id in ctx.heard


async def _guarded(
    limit: asyncio.Semaphore, instance_id: str, action: Coroutine[Any, Any, None]
) -> bool:
    """Run one instance's action at most ``PASS_CONCURRENCY`` at once; a failure (and its
    rollback) must not touch the others."""
    async with limit:
        try:
            await action
        except TransitionError:
            pass  # someone else changed it first: fine
        except Exception:
            log.exception("reconciling instance %s failed", instance_id)
    return True


async def _finish(ctx: AppContext, instance_id: str) -> None:
    """A transitional row whose operation was abandoned: complete it or fail it."""
    async with ctx.db.session() as session:
        row = await session.get(Instance, instance_id)
        if row is None or row.destroyed_at is not None:
            return
        try:
            provider = instances.provider_for(ctx, row)
        except ProviderUnavailable:
            return
        status = S(row.status)
        if status in (S.RUNNING, S.ERROR) or recovery.watched(ctx, row):
            return
        if not operations.abandoned(ctx, row):
            return  # taken up again since the pass read it
        await _finish_abandoned(ctx, session, provider, row, status)


async def _finish_abandoned(
    ctx: AppContext, session: AsyncSession, provider: ComputeProvider, row: Instance, status: S
) -> None:
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
    ctx: AppContext, provider: ComputeProvider, instance_id: str, seen: MachineStatus
) -> None:
    """A ``running`` row, or one whose agent is between restarts, whose machine is ``seen``:
    what its watch would do, and its watch started if it has none. No session is held while
    its guest is asked (a pass may ask many that do not answer)."""
    async with ctx.db.session() as session:
        row = await session.get(Instance, instance_id)
        if row is None or not recovery.watched(ctx, row):
            return  # changed since the pass read it
        if seen.state is not MachineState.RUNNING:
            await recovery.machine_down(ctx, session, row, seen)
            return
        if row.recovery_attempts and utcnow() - row.updated_at >= recovery.STABLE_RUN:
            row.recovery_attempts = 0
            await session.commit()
    if _followed(ctx, row.id):
        return  # its watch follows the guest already
    try:
        health = await guest_client.health(
            provider.guest_endpoint(instances.handle_of(row)),
            instances.guest_secret(ctx, row),
            timeout=instances.HEALTH_TIMEOUT,
        )
    except guest_client.GuestError:
        health = None  # its watch (or the next pass) looks again
    if health is not None and health.get("configured") is False:
        # Its machine was restarted by its provider, not by us: configure it again.
        await instances.configure_if_rebooted(ctx, row)
    elif health is not None:
        async with ctx.db.session() as session:
            row = await session.get(Instance, instance_id)
            if row is None or not recovery.watched(ctx, row):
                return
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
