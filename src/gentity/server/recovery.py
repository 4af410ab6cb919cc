"""Instance-level recovery: what the control plane does when an agent, a guest daemon or a whole
machine stops by itself, by the instance's ``restartPolicy``.

**Watching.** Every running instance this server can reach has a watch: a task that keeps the
guest's ``wait`` op open, which answers as soon as the guest's state changes (no polling, no
guest call per API request). From what the guest says:

- the agent exited and the guest restarts it after a delay (agent state ``backoff``): the
  instance goes ``running → restarting`` with the exit and the delay as the reason, and back to
  ``running`` once the agent runs again. This ``restarting`` has no operation under way (no
  ``operation_owner``), so stop, restart and DELETE are allowed from it, unlike during a
  restart someone asked for;
- the agent exited and its policy does not restart it (``never``; ``on-failure`` after a clean
  exit), or it cannot be started again: the machine is stopped and the instance goes to
  ``error`` with the exit as its message;
- the guest stopped answering: the provider says whether the machine still runs and, if not,
  why (the local provider knows how the guest's process ended). A machine that is no longer
  running goes to ``error`` at once, with that as the reason.
- the guest answers unconfigured (its machine was restarted by its provider, not by us): it
  gets its config again.

What a watch last heard is also what the API shows as the instance's ``agent`` (``ctx.heard``):
the guest answers at every change, so the list needs no guest call per running instance.

The reconciler checks every watched instance's machine on every pass, for what a watch missed
(a server that was down meanwhile), and asks the guests that have no watch here and starts
their watches; several replicas each watch, and every change is a
compare-and-set, so only the first to see a change records it.

**Restarting a dead machine.** Under ``always`` and ``on-failure`` a machine that died is started
again by an operation like a user's ``start`` (events ``error → starting → running``): the
first attempt at once, the next ones :func:`delay_before` later (5, 10, 20, 40 s) while they
keep failing or the machine keeps dying, at most :data:`MAX_ATTEMPTS` in a row; then it stays
in ``error``. The count starts again when the user starts or restarts the instance, and once it
has been running for :data:`STABLE_RUN`. Under ``never`` nothing is restarted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from datetime import timedelta
from typing import Any, TypeGuard

from sqlalchemy.ext.asyncio import AsyncSession

from gentity.guest import client as guest_client
from gentity.guest import protocol as p
from gentity.guest.client import GuestEndpoint
from gentity.models import InstanceStatus as S
from gentity.models import RestartPolicy
from gentity.providers.compute.base import (
    MachineState,
    MachineStatus,
    ProviderError,
    ProviderUnavailable,
)
from gentity.server.context import AppContext
from gentity.server.db.ids import utcnow
from gentity.server.db.orm import Instance
from gentity.server.services import instances, operations
from gentity.server.services.errors import Conflict
from gentity.server.services.instance_status import (
    RECONCILER,
    TransitionError,
    acting,
    set_status,
)

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 5
"""Automatic restarts of a dead machine in a row before recovery gives up."""
BACKOFF_SECONDS = 5.0
STABLE_RUN = timedelta(minutes=10)
"""Running this long after an automatic restart resets the count of attempts."""
WATCH_SECONDS = 50.0
"""How long one ``wait`` on a guest lasts when nothing changes. The guest answers at once on any
change and a dead guest closes the connection, so this only sets how often an idle instance's
watch wakes the server and the guest for nothing, their main idle cost. Below the guest's
limit (``MAX_WAIT``, 60 s) and the 60 s idle timeout common to proxies on the way."""
_RETRY_MIN, _RETRY_MAX = 0.2, 5.0


def delay_before(attempt: int) -> float:
    """Seconds between a machine's death (or a failed attempt) and automatic restart number
    ``attempt`` (from 1): none for the first, then 5, 10, 20, 40 s."""
    return 0.0 if attempt <= 1 else BACKOFF_SECONDS * 2 ** (attempt - 2)


def agent_restarting(ctx: AppContext, row: Instance) -> bool:
    """Whether ``row`` is ``restarting`` because its guest restarts the agent, not because an
    operation restarts the machine."""
    return row.status == S.RESTARTING.value and instances.guest_serves(ctx, row)


def watched(ctx: AppContext, row: Instance) -> bool:
    """Whether the guest's state decides ``row``'s status now (no operation is under way)."""
    if row.destroyed_at is not None or row.provider_ref is None:
        return False
    if operations.in_flight_here(ctx, row.id):
        return False
    return row.status == S.RUNNING.value or agent_restarting(ctx, row)


def agent_exit(code: object) -> str:
    """``agent exited with code 1`` or ``agent exited with signal KILL`` (the guest reports a
    signal as 128 + its number)."""
    if not isinstance(code, int):
        return "agent exited"
    if code > 128:
        with contextlib.suppress(ValueError):
            return f"agent exited with signal {signal.Signals(code - 128).name.removeprefix('SIG')}"
    return f"agent exited with code {code}"


# --- what the guest says -------------------------------------------------------------------


async def follow(
    ctx: AppContext,
    session: AsyncSession,
    row: Instance,
    health: Any,
    *,
    restarts_seen: int | None = None,
) -> None:
    """Bring a watched row's status in line with its guest's ``health``. Commits; raises
    :class:`TransitionError` when the row changed meanwhile.

    ``restarts_seen``: the agent's restart count in the guest's previous answer, if the caller
    has one; a higher count now means a whole restart happened between the two answers (a
    short back-off on a busy host), which is recorded too."""
    if not isinstance(health, dict) or health.get("configured") is not True:
        return  # an unconfigured guest is configured again by its watch or the reconciler
    status, state = S(row.status), health.get("state")
    reported = health.get("agent")
    agent: dict[str, Any] = reported if isinstance(reported, dict) else {}
    restarts = agent.get("restarts")
    missed = isinstance(restarts, int) and restarts_seen is not None and restarts > restarts_seen
    if missed and status is S.RUNNING and agent.get("state") != p.AGENT_BACKOFF:
        exited = agent_exit(agent.get("lastExitCode"))
        await set_status(session, row, S.RESTARTING, f"{exited}; restarting")
        await session.commit()
        status = S.RESTARTING
    if agent.get("state") == p.AGENT_BACKOFF and status is S.RUNNING:
        delay = agent.get("restartDelay")
        when = f"restarting in {delay:g} s" if isinstance(delay, int | float) else "restarting"
        await set_status(
            session, row, S.RESTARTING, f"{agent_exit(agent.get('lastExitCode'))}; {when}"
        )
        await session.commit()
    elif state == p.STATE_RUNNING and status is S.RESTARTING:
        await set_status(session, row, S.RUNNING, "agent running again")
        await session.commit()
    elif state in (p.STATE_EXITED, p.STATE_ERROR):
        if state == p.STATE_EXITED:
            why = agent_exit(agent.get("lastExitCode"))
            message = f"{why}; not restarted (restart policy {row.restart_policy})"
        else:
            why = "agent failed"
            message = str(health.get("error") or "the agent failed")
        # Nothing runs the agent any more: stop the machine, so a `start` boots it afresh;
        # before the status says so, so that no start can race with the stop.
        await _stop(ctx, row)
        await set_status(session, row, S.ERROR, why, error_message=message)
        await session.commit()


async def _stop(ctx: AppContext, row: Instance) -> None:
    with contextlib.suppress(ProviderError, ProviderUnavailable):
        await instances.provider_for(ctx, row).stop(instances.handle_of(row))


async def machine_down(
    ctx: AppContext, session: AsyncSession, row: Instance, seen: MachineStatus
) -> None:
    """The machine of a watched row is no longer running (its guest or the whole machine died):
    ``error`` with the reason at once, then an automatic restart by policy. Commits."""
    why = seen.detail or f"the machine is {seen.state.value}"
    # Whatever is left of it (processes, a socket) goes before anyone may start it again.
    await _stop(ctx, row)
    due = _schedule(row, why)
    await set_status(session, row, S.ERROR, why, error_message=row.error_message)
    await session.commit()
    if due:
        start_recovery(ctx, row.id)


def _schedule(row: Instance, why: str) -> bool:
    """Set the row's next automatic restart (and its message) by policy; whether it is due now.
    Writes the row without committing."""
    if row.restart_policy == RestartPolicy.NEVER:
        row.recover_at = None
        row.error_message = f"{why}; not restarted (restart policy never)"
        return False
    if row.recovery_attempts >= MAX_ATTEMPTS:
        row.recover_at = None
        row.error_message = (
            f"{why}; not restarted again after {MAX_ATTEMPTS} automatic restarts in a row"
        )
        return False
    attempt = row.recovery_attempts + 1
    delay = delay_before(attempt)
    row.recover_at = utcnow() + timedelta(seconds=delay)
    when = "now" if delay == 0 else f"in {delay:g} s"
    row.error_message = f"{why}; restarting it {when} (attempt {attempt} of {MAX_ATTEMPTS})"
    return delay == 0


# --- restarting a dead machine -------------------------------------------------------------


def start_recovery(ctx: AppContext, instance_id: str) -> None:
    """Start the due automatic restart of ``instance_id`` in the background."""
    if operations.in_flight_here(ctx, instance_id):
        return
    task = asyncio.create_task(_recover(ctx, instance_id), name=f"recover-{instance_id}")
    ctx.background.add(task)
    task.add_done_callback(ctx.background.discard)


async def _recover(ctx: AppContext, instance_id: str) -> None:
    async def operate(session: AsyncSession, inst: Instance) -> None:
        due = inst.recover_at
        if inst.status != S.ERROR.value or due is None or due > utcnow():
            raise TransitionError("no automatic restart is due")
        inst.recovery_attempts += 1
        inst.recover_at = None
        reason = f"restarting automatically (attempt {inst.recovery_attempts} of {MAX_ATTEMPTS})"
        await set_status(session, inst, S.STARTING, reason)
        await session.commit()
        await instances.boot(ctx, session, inst)

    try:
        failure = await operations.run_operation(ctx, instance_id, operate)
    except (TransitionError, ProviderUnavailable, Conflict):
        return
    if failure is None:
        return
    async with ctx.db.session() as session:
        row = await session.get(Instance, instance_id)
        if row is None or row.status != S.ERROR.value:
            return
        _schedule(row, failure)
        await session.commit()


async def recover_due(ctx: AppContext, row: Instance) -> None:
    """For the reconciler: start ``row``'s automatic restart if it is due."""
    if row.recover_at is not None and row.recover_at <= utcnow():
        start_recovery(ctx, row.id)


# --- watches -------------------------------------------------------------------------------


def watch(ctx: AppContext, instance_id: str) -> None:
    """Watch ``instance_id``'s guest unless this server already does; the watch ends by itself
    once the row is no longer :func:`watched`."""
    current = ctx.watches.get(instance_id)
    if current is not None and not current.done():
        return
    # What a watch changes is the server's doing, not that of the request whose start began it.
    with acting(RECONCILER):
        task = asyncio.create_task(_watch(ctx, instance_id), name=f"watch-{instance_id}")
    ctx.watches[instance_id] = task

    def forget(done: asyncio.Task[None]) -> None:
        if ctx.watches.get(instance_id) is done:
            del ctx.watches[instance_id]

    task.add_done_callback(forget)


def watching(ctx: AppContext, instance_id: str) -> bool:
    """Whether this server has a live watch on the instance's guest."""
    task = ctx.watches.get(instance_id)
    return task is not None and not task.done()


async def stop_watches(ctx: AppContext) -> None:
    tasks = list(ctx.watches.values())
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.wait(tasks)


async def _watch(ctx: AppContext, instance_id: str) -> None:
    try:
        await _watch_loop(ctx, instance_id)
    except Exception:
        # The reconciler starts another on its next pass.
        log.exception("watching instance %s failed", instance_id)
    finally:
        ctx.heard.pop(instance_id, None)


def _unchanged(health: dict[str, Any] | None, since: object) -> TypeGuard[dict[str, Any]]:
    """Whether a wait ended with nothing new: the configured guest's version is the one the
    watch already followed, so its row has nothing to follow either."""
    return (
        since is not None
        and isinstance(health, dict)
        and health.get("configured") is True
        and health.get("version") == since
    )


async def _operations_done(ctx: AppContext, instance_id: str) -> None:
    """Until this server runs no operation on the instance (e.g. the start that began the
    watch, which is still finishing)."""
    while operations.in_flight_here(ctx, instance_id):
        running: set[asyncio.Task[str | None]] = set(ctx.operations.get(instance_id, ()))
        if instance_id in ctx.destroying:
            running.add(ctx.destroying[instance_id])
        await asyncio.wait(running)


async def _watch_loop(ctx: AppContext, instance_id: str) -> None:
    since: object = None
    restarts_seen: int | None = None
    failures = 0
    # The guest's endpoint and secret, kept from one wait to the next only while its answers
    # say that nothing changed: an idle instance's watch then wakes without reading its row,
    # which was most of what a watch cost the server at rest. Anything else reads it again.
    guest: tuple[GuestEndpoint, str] | None = None
    while True:
        if operations.in_flight_here(ctx, instance_id):
            ctx.heard.pop(instance_id, None)  # an operation changes the guest under it
            guest = None
            await _operations_done(ctx, instance_id)
        row_read = guest is None
        if guest is None:
            async with ctx.db.session() as session:
                found = await session.get(Instance, instance_id)
                if found is None or not watched(ctx, found):
                    return
                read = found
                try:
                    provider = instances.provider_for(ctx, read)
                except ProviderUnavailable:
                    return  # another host's: its servers watch it
                handle = instances.handle_of(read)
                guest = (provider.guest_endpoint(handle), instances.guest_secret(ctx, read))
        endpoint, secret = guest
        # No database session is held while the guest is waited for.
        health: dict[str, Any] | None
        try:
            if since is None:
                health = await guest_client.health(
                    endpoint, secret, timeout=instances.HEALTH_TIMEOUT
                )
            else:
                health = await guest_client.wait(
                    endpoint, secret, since=since, timeout=WATCH_SECONDS
                )
            failures = 0
        except guest_client.GuestError:
            health, failures = None, failures + 1
        if _unchanged(health, since):
            ctx.heard[instance_id] = health
            continue
        guest = None
        if health is not None and not row_read:
            continue  # something changed: read the row, then ask the guest again (at once)
        # (No answer at all is followed as before: the row is read below, and the machine's
        # status asked, without waiting on the guest a second time.)
        if isinstance(health, dict) and health.get("configured") is True:
            ctx.heard[instance_id] = health
        else:
            ctx.heard.pop(instance_id, None)
        if isinstance(health, dict) and health.get("configured") is False:
            # Its machine booted without us (a provider's own restart): configure it again.
            if not await instances.configure_if_rebooted(ctx, read):
                await asyncio.sleep(_RETRY_MIN)
            since = None
            continue
        async with ctx.db.session() as session:
            row = await session.get(Instance, instance_id)
            if row is None or not watched(ctx, row):
                return
            try:
                if health is not None:
                    since = health.get("version")
                    await follow(ctx, session, row, health, restarts_seen=restarts_seen)
                    agent = health.get("agent")
                    if isinstance(agent, dict) and isinstance(agent.get("restarts"), int):
                        restarts_seen = agent["restarts"]
                    continue
                seen = await provider.status(handle)
                if not seen.state.in_progress and seen.state is not MachineState.RUNNING:
                    await machine_down(ctx, session, row, seen)
                    return
            except TransitionError:
                await session.rollback()
                continue
        # The guest did not answer but its machine runs (e.g. still going down): ask again.
        since = None
        await asyncio.sleep(min(_RETRY_MIN * 2 ** (failures - 1), _RETRY_MAX))
