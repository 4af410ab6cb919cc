"""Operations: the long steps of an instance's life (create, start, stop, restart, destroy),
run to completion even when the request that asked for them goes away, under a lease.

While an operation runs it renews the row's ``updated_at`` and names its owner process
(``Instance.operation_owner``); the reconciler finishes or fails a transitional row whose owner
is gone or whose lease ran out (see ``abandoned``). A destroy cancels this process's other
operations on the instance first. A provider or guest failure moves the instance to ``error``
with the failure's message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from gentity.guest import client as guest_client
from gentity.models import InstanceStatus as S
from gentity.providers.compute.base import ProviderError, ProviderUnavailable
from gentity.server.context import AppContext
from gentity.server.db.ids import utcnow
from gentity.server.db.orm import Instance
from gentity.server.services.errors import Conflict
from gentity.server.services.instance_status import TransitionError, set_status

log = logging.getLogger(__name__)

# Another replica takes over an operation whose owner stopped renewing within LEASE_TTL; the
# owner's own restart does not wait for it (see ``abandoned``).
LEASE_RENEW_SECONDS = 10.0
LEASE_TTL = timedelta(seconds=30)


async def release(db: AsyncSession) -> None:
    """End the request's read transaction before a long wait, so its pooled connection (and, on
    SQLite, the WAL snapshot it pins) is not held while the operation runs in its own session.
    Loaded rows stay usable (the sessions do not expire them on commit)."""
    await db.commit()


Operation = Callable[[AsyncSession, Instance], Awaitable[None]]
Failure = str | None
"""Why an operation failed, in words for the user; None when it did not."""


async def run_operation(
    ctx: AppContext,
    instance_id: str,
    operation: Operation,
    *,
    destroy: bool = False,
    owned: bool = False,
) -> Failure:
    """Run ``operation`` to completion even if the caller is cancelled, under a lease.

    A provider or guest failure moves the instance to ``error`` (where the table allows) with
    the failure's message, which is also returned.
    A destroy cancels this process's other operations on the instance and waits for them to
    unwind before it starts; their callers get a 409.
    ``owned``: the row was written naming this server as its owner already (a new instance's
    row, see :func:`owner`), so that write is not made again.
    """
    if destroy:
        running = ctx.destroying.get(instance_id)
        if running is None:
            # Registered before anything awaits, so no operation can start in between.
            running = asyncio.create_task(_destroy_after_others(ctx, instance_id, operation))
            _track(ctx, running)
            ctx.destroying[instance_id] = running
            running.add_done_callback(lambda _: ctx.destroying.pop(instance_id, None))
        return await asyncio.shield(running)
    if instance_id in ctx.destroying:
        raise Conflict("the instance is being destroyed")
    task = asyncio.create_task(_supervised(ctx, instance_id, operation, owned=owned))
    _track(ctx, task)
    tasks = ctx.operations.setdefault(instance_id, set())
    tasks.add(task)
    task.add_done_callback(lambda _: _forget(ctx, instance_id, task))
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        caller = asyncio.current_task()
        if task.cancelled() and caller is not None and not caller.cancelling():
            # Not our caller that went away: a DELETE cancelled the operation.
            raise Conflict("the instance was destroyed before this finished") from None
        raise


async def _destroy_after_others(ctx: AppContext, instance_id: str, operation: Operation) -> Failure:
    others = ctx.operations.get(instance_id, set())
    for task in others:
        task.cancel()
    if others:
        # Each unwinds (a provider step in a worker thread finishes first) before the
        # teardown starts, so nothing is created after it has removed everything.
        await asyncio.wait(set(others))
    return await _supervised(ctx, instance_id, operation)


def _track(ctx: AppContext, task: asyncio.Task[Failure]) -> None:
    ctx.background.add(task)
    task.add_done_callback(ctx.background.discard)


def _forget(ctx: AppContext, instance_id: str, task: asyncio.Task[Failure]) -> None:
    tasks = ctx.operations.get(instance_id)
    if tasks is not None:
        tasks.discard(task)
        if not tasks:
            del ctx.operations[instance_id]


def in_flight_here(ctx: AppContext, instance_id: str) -> bool:
    return bool(ctx.operations.get(instance_id)) or instance_id in ctx.destroying


def abandoned(ctx: AppContext, row: Instance) -> bool:
    """Whether nobody is carrying out the operation a transitional row is in: its owner is a
    server of this node that exited (or this one, which is not running it), or its lease ran
    out."""
    if in_flight_here(ctx, row.id):
        return False
    owner = row.operation_owner
    if owner is not None and ctx.node is not None and ctx.node.is_gone(owner):
        return True
    return utcnow() - row.updated_at >= LEASE_TTL


def owner(ctx: AppContext) -> str | None:
    """What ``Instance.operation_owner`` says while this server runs an operation."""
    return ctx.node.owner if ctx.node else None


def settle(inst: Instance) -> None:
    """The operation's last write gives the row up as well: called before its final status
    change, it lands in the same transaction, which spares a commit of its own (and the wait
    for it, by the request that waits for the operation)."""
    inst.operation_owner = None


async def _own(ctx: AppContext, instance_id: str, owner: str | None) -> None:
    async with ctx.db.session() as session:
        await session.execute(
            update(Instance).where(Instance.id == instance_id).values(operation_owner=owner)
        )
        await session.commit()


async def _supervised(
    ctx: AppContext, instance_id: str, operation: Operation, *, owned: bool = False
) -> Failure:
    if not owned:
        await _own(ctx, instance_id, owner(ctx))
    lease = asyncio.create_task(_renew_lease(ctx, instance_id))
    released = False
    try:
        async with ctx.db.session() as session:
            inst = await session.get_one(Instance, instance_id)
            try:
                await operation(session, inst)
                # Given up by its last commit already (see settle)?
                released = inst.operation_owner is None and not session.is_modified(inst)
                return None
            except (TransitionError, ProviderUnavailable):
                raise  # nothing happened to the machine: nothing to record
            except Exception as exc:
                expected = isinstance(exc, ProviderError | guest_client.GuestError | OSError)
                if expected:
                    log.warning("instance %s: %s", instance_id, exc)
                else:
                    log.exception("instance %s: operation failed", instance_id)
                message = str(exc) if expected else "internal error; see the server log"
                await session.rollback()
                await session.refresh(inst)
                try:
                    await set_status(
                        session, inst, S.ERROR, "operation failed", error_message=message
                    )
                    await session.commit()
                except TransitionError:
                    await session.rollback()  # e.g. `destroying`, which only goes forward
                return message
    finally:
        lease.cancel()
        if not released:
            # Shielded: a cancelled operation must still give its row up.
            with contextlib.suppress(Exception):
                await asyncio.shield(_own(ctx, instance_id, None))


async def _renew_lease(ctx: AppContext, instance_id: str) -> None:
    while True:
        await asyncio.sleep(LEASE_RENEW_SECONDS)
        async with ctx.db.session() as session:
            await session.execute(
                update(Instance).where(Instance.id == instance_id).values(updated_at=utcnow())
            )
            await session.commit()
