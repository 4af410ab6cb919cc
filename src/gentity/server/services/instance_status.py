"""The one place an instance's status changes.

Statuses follow :data:`TRANSITIONS`, which also says which user action may take each step.
Every change is a compare-and-set on the row (so two replicas acting on one instance cannot
both win) and records an :class:`InstanceEvent` with the reason. ``destroyed`` is terminal:
nothing leaves it.

Each event also names who asked for the change (:data:`ACTOR`): the credential of the request
that started it, ``reconciler``, or ``system``. A context variable carries it, so the tasks an
operation runs in (which copy the context of the request that started them) keep it without
every step passing it along.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from gentity.models import InstanceAction as A
from gentity.models import InstanceStatus as S
from gentity.server.db.ids import utcnow
from gentity.server.db.orm import Instance, InstanceEvent

_BY_OPERATION: frozenset[A] = frozenset()
"""An edge that only an operation under way (or the reconciler) takes, never a user's action."""

# Every allowed change, with the actions (``POST …/action``) that may start it. DELETE may
# start `destroying` from anywhere but `destroyed`.
TRANSITIONS: dict[S, dict[S, frozenset[A]]] = {
    S.PROVISIONING: {
        S.STARTING: _BY_OPERATION,
        S.ERROR: _BY_OPERATION,
        S.DESTROYING: _BY_OPERATION,
    },
    S.STARTING: {S.RUNNING: _BY_OPERATION, S.ERROR: _BY_OPERATION, S.DESTROYING: _BY_OPERATION},
    S.RUNNING: {
        S.STOPPING: frozenset({A.STOP}),
        # A user's restart, or the agent's own (see RESTARTING).
        S.RESTARTING: frozenset({A.RESTART}),
        S.ERROR: _BY_OPERATION,
        S.DESTROYING: _BY_OPERATION,
    },
    S.STOPPING: {S.STOPPED: _BY_OPERATION, S.ERROR: _BY_OPERATION, S.DESTROYING: _BY_OPERATION},
    # Restarting a stopped instance is starting it: there is nothing to stop first.
    S.STOPPED: {
        S.STARTING: frozenset({A.START, A.RESTART}),
        S.ERROR: _BY_OPERATION,
        S.DESTROYING: _BY_OPERATION,
    },
    # Also the agent's own restart (its guest restarts it after a delay, no operation under
    # way): a user may stop or restart the instance from it then (``instances.act`` refuses
    # both while an operation restarts the machine).
    S.RESTARTING: {
        S.RUNNING: _BY_OPERATION,
        S.STOPPING: frozenset({A.STOP}),
        S.RESTARTING: frozenset({A.RESTART}),
        S.ERROR: _BY_OPERATION,
        S.DESTROYING: _BY_OPERATION,
    },
    S.ERROR: {
        S.STARTING: frozenset({A.START}),
        S.RESTARTING: frozenset({A.RESTART}),
        S.DESTROYING: _BY_OPERATION,
    },
    # A destroy that fails stays `destroying` and is retried (by DELETE or the reconciler):
    # the user asked for the instance to be gone, nothing may bring it back.
    S.DESTROYING: {S.DESTROYED: _BY_OPERATION},
    S.DESTROYED: {},
}

# States in which an operation is under way; the reconciler finishes abandoned ones.
TRANSITIONAL = frozenset({S.PROVISIONING, S.STARTING, S.STOPPING, S.RESTARTING, S.DESTROYING})


SYSTEM = "system"
RECONCILER = "reconciler"
ACTOR: ContextVar[str] = ContextVar("gentity_status_actor", default=SYSTEM)
"""Who the status changes made in this context are on behalf of: ``token:<api token id>`` or
``session:<session id>`` for a request, ``reconciler``, or ``system`` for anything else."""


@contextlib.contextmanager
def acting(actor: str) -> Iterator[None]:
    """Record ``actor`` on the status changes made inside the block (and tasks started in it)."""
    token = ACTOR.set(actor)
    try:
        yield
    finally:
        ACTOR.reset(token)


class TransitionError(Exception):
    """The change is not allowed from the instance's current status (or it just changed)."""


def allowed(current: S, target: S) -> bool:
    return target in TRANSITIONS[current]


def action_step(current: S, action: A) -> S | None:
    """The status that ``action`` moves an instance in ``current`` into; None when the action
    is not allowed now."""
    return next((target for target, by in TRANSITIONS[current].items() if action in by), None)


async def set_status(
    db: AsyncSession,
    instance: Instance,
    target: S,
    reason: str,
    *,
    error_message: str | None = None,
) -> None:
    """Move ``instance`` to ``target``, recording why. Flushes; the caller commits, so the
    change lands in one transaction with the writes that belong to it (e.g. the machine's
    handle), and rolls back on :class:`TransitionError`.

    ``error_message`` is kept only on ``error``; any other status clears it.
    """
    current = S(instance.status)
    if not allowed(current, target):
        raise TransitionError(f"cannot go from {current} to {target}")
    now = utcnow()
    values: dict[str, object] = {
        "status": target.value,
        "updated_at": now,
        "error_message": error_message if target is S.ERROR else None,
    }
    if target is S.DESTROYED:
        values["destroyed_at"] = now
    if target is S.RUNNING:
        # Becoming `running` counts as activity: a freshly started instance is not idle.
        values["last_activity_at"] = now
    result = await db.execute(
        update(Instance)
        .where(Instance.id == instance.id, Instance.status == current.value)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise TransitionError(f"the instance is no longer {current}")
    db.add(
        InstanceEvent(
            instance_id=instance.id,
            from_status=current.value,
            to_status=target.value,
            reason=reason,
            actor=ACTOR.get(),
            created_at=now,
        )
    )
    await db.flush()
    for key, value in values.items():
        # Already written: update the loaded object without marking it dirty.
        set_committed_value(instance, key, value)


async def record_creation(db: AsyncSession, instance: Instance, reason: str) -> None:
    """The first event of an instance (no previous status)."""
    db.add(
        InstanceEvent(
            instance_id=instance.id,
            from_status=None,
            to_status=instance.status,
            reason=reason,
            actor=ACTOR.get(),
        )
    )
