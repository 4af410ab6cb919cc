"""The one place an instance's status changes.

Statuses follow :data:`TRANSITIONS`. Every change is a compare-and-set on the row (so two
replicas acting on one instance cannot both win) and records an :class:`InstanceEvent` with the
reason. ``destroyed`` is terminal: nothing leaves it.
"""

from __future__ import annotations

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from gentity.models import InstanceStatus as S
from gentity.server.db.ids import utcnow
from gentity.server.db.orm import Instance, InstanceEvent

TRANSITIONS: dict[S, frozenset[S]] = {
    S.PROVISIONING: frozenset({S.STARTING, S.ERROR, S.DESTROYING}),
    S.STARTING: frozenset({S.RUNNING, S.ERROR, S.DESTROYING}),
    S.RUNNING: frozenset({S.STOPPING, S.RESTARTING, S.ERROR, S.DESTROYING}),
    S.STOPPING: frozenset({S.STOPPED, S.ERROR, S.DESTROYING}),
    S.STOPPED: frozenset({S.STARTING, S.ERROR, S.DESTROYING}),
    S.RESTARTING: frozenset({S.RUNNING, S.ERROR, S.DESTROYING}),
    S.ERROR: frozenset({S.STARTING, S.RESTARTING, S.STOPPED, S.DESTROYING}),
    # A destroy that fails stays `destroying` and is retried (by DELETE or the reconciler):
    # the user asked for the instance to be gone, nothing may bring it back.
    S.DESTROYING: frozenset({S.DESTROYED}),
    S.DESTROYED: frozenset(),
}

# States in which an operation is under way; the reconciler finishes abandoned ones.
TRANSITIONAL = frozenset({S.PROVISIONING, S.STARTING, S.STOPPING, S.RESTARTING, S.DESTROYING})


class TransitionError(Exception):
    """The change is not allowed from the instance's current status (or it just changed)."""


def allowed(current: S, target: S) -> bool:
    return target in TRANSITIONS[current]


async def set_status(
    db: AsyncSession,
    instance: Instance,
    target: S,
    reason: str,
    *,
    error_message: str | None = None,
) -> None:
    """Move ``instance`` to ``target``, recording why. Commits.

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
    result = await db.execute(
        update(Instance)
        .where(Instance.id == instance.id, Instance.status == current.value)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        await db.rollback()
        raise TransitionError(f"the instance is no longer {current}")
    db.add(
        InstanceEvent(
            instance_id=instance.id,
            from_status=current.value,
            to_status=target.value,
            reason=reason,
            created_at=now,
        )
    )
    await db.commit()
    for key, value in values.items():
        # Already in the database: update the loaded object without marking it dirty.
        set_committed_value(instance, key, value)


async def record_creation(db: AsyncSession, instance: Instance, reason: str) -> None:
    """The first event of an instance (no previous status)."""
    db.add(
        InstanceEvent(
            instance_id=instance.id, from_status=None, to_status=instance.status, reason=reason
        )
    )
