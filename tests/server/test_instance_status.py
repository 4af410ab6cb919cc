"""The status writer: one table for transitions and actions; the caller owns the transaction."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import select

from gentity.models import InstanceAction as A
from gentity.models import InstanceStatus as S
from gentity.server.db.database import Database
from gentity.server.db.orm import Instance, InstanceEvent
from gentity.server.services.accounts import create_user
from gentity.server.services.instance_status import (
    TRANSITIONS,
    TransitionError,
    action_step,
    set_status,
)
from gentity.settings import Settings
from tests.conftest import PASSWORD


@pytest.mark.parametrize(
    ("current", "action", "step"),
    [
        (S.RUNNING, A.STOP, S.STOPPING),
        (S.RUNNING, A.RESTART, S.RESTARTING),
        (S.RUNNING, A.START, None),
        (S.STOPPED, A.START, S.STARTING),
        (S.STOPPED, A.RESTART, S.STARTING),  # nothing to stop first
        (S.STOPPED, A.STOP, None),
        (S.ERROR, A.START, S.STARTING),
        (S.ERROR, A.RESTART, S.RESTARTING),
        (S.ERROR, A.STOP, None),
        (S.PROVISIONING, A.START, None),  # the create's own operation starts it
        (S.STARTING, A.RESTART, None),
        # The agent's own restart gives way to a user's action (a restart operation does not:
        # instances.act refuses while one is under way).
        (S.RESTARTING, A.STOP, S.STOPPING),
        (S.RESTARTING, A.RESTART, S.RESTARTING),
        (S.RESTARTING, A.START, None),
        (S.DESTROYING, A.START, None),
        (S.DESTROYED, A.RESTART, None),
    ],
)
def test_actions_follow_the_transition_table(current: S, action: A, step: S | None) -> None:
    assert action_step(current, action) == step


def test_terminal_states_never_regress() -> None:
    assert TRANSITIONS[S.DESTROYED] == {}
    assert set(TRANSITIONS[S.DESTROYING]) == {S.DESTROYED}
    # Every status is in the table, and every edge ends in a status.
    assert set(TRANSITIONS) == set(S)
    assert all(set(edges) <= set(S) for edges in TRANSITIONS.values())


async def _instance(db: Database, status: S) -> str:
    async with db.session() as session:
        user = await create_user(session, "owner@example.com", PASSWORD, admin=False)
        row = Instance(
            user_id=user.id,
            name="one",
            subdomain="sh-status",
            agent_type="shell",
            model_provider="none",
            model_name="bash",
            cpus=1,
            memory_mb=512,
            volume_gb=1,
            status=status.value,
            provider="local",
            provider_state={},
            guest_secret_ciphertext=b"x",
        )
        session.add(row)
        await session.commit()
        return row.id


async def _stored(db: Database, instance_id: str) -> tuple[str, str | None, list[str]]:
    async with db.session() as session:
        row = await session.get_one(Instance, instance_id)
        events = await session.scalars(
            select(InstanceEvent.to_status).where(InstanceEvent.instance_id == instance_id)
        )
        return row.status, row.provider_ref, list(events)


def test_set_status_leaves_the_transaction_to_its_caller(settings: Settings) -> None:
    async def scenario() -> None:
        db = Database(settings.resolved_database_url)
        await db.migrate()
        try:
            iid = await _instance(db, S.PROVISIONING)
            # Rolled back by the caller: neither the change nor its event is kept.
            async with db.session() as session:
                row = await session.get_one(Instance, iid)
                row.provider_ref = "machine-1"
                await set_status(session, row, S.STARTING, "machine created")
                await session.rollback()
            assert await _stored(db, iid) == ("provisioning", None, [])
            # Committed by the caller: the change, its event and the related write together.
            async with db.session() as session:
                row = await session.get_one(Instance, iid)
                row.provider_ref = "machine-1"
                await set_status(session, row, S.STARTING, "machine created")
                await session.commit()
            assert await _stored(db, iid) == ("starting", "machine-1", ["starting"])
        finally:
            await db.close()

    asyncio.run(scenario())


def test_set_status_is_a_compare_and_set(settings: Settings) -> None:
    async def scenario() -> None:
        db = Database(settings.resolved_database_url)
        await db.migrate()
        try:
            iid = await _instance(db, S.RUNNING)
            async with db.session() as first, db.session() as second:
                mine = await first.get_one(Instance, iid)
                theirs = await second.get_one(Instance, iid)
                await set_status(second, theirs, S.STOPPING, "stop requested")
                await second.commit()
                # `mine` still believes the instance runs: the change is refused.
                with pytest.raises(TransitionError):
                    await set_status(first, mine, S.RESTARTING, "restart requested")
                await first.rollback()
            assert await _stored(db, iid) == ("stopping", None, ["stopping"])
        finally:
            await db.close()

    asyncio.run(scenario())
