"""The reconciler's pass over many instances: one batch of provider statuses, and writes only
for what changed (on SQLite and PostgreSQL, as every server test)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from gentity.providers.compute.base import MachineHandle
from gentity.server.reconciler import PassReport, reconcile_once
from gentity.settings import Settings
from tests.conftest import LiveServer
from tests.server.test_instances import create_shell
from tests.waiting import wait_until_blocking


@pytest.fixture
def settings(settings_factory: Callable[..., Settings]) -> Settings:
    """Only the passes a test runs (and the one at start-up): no background pass counts."""
    return settings_factory(reconcile_interval_seconds=3600)


def _handle(iid: str) -> MachineHandle:
    return MachineHandle(ref=iid, data={"cpus": 1, "memoryMb": 512})


@pytest.mark.local_only  # kills a local machine's processes
def test_a_pass_asks_for_statuses_in_one_batch_and_writes_only_what_changed(
    server: LiveServer, bearer: httpx.Client
) -> None:
    ctx = server.app.state.ctx
    provider = ctx.providers.default
    iids = [create_shell(bearer, restartPolicy="never")["id"] for _ in range(3)]
    batches: list[int] = []
    singles: list[str] = []
    statuses, status = provider.statuses, provider.status

    async def counted_statuses(handles: Any) -> Any:
        batches.append(len(handles))
        return await statuses(handles)

    async def counted_status(handle: MachineHandle) -> Any:
        singles.append(handle.ref)
        return await status(handle)

    def events() -> dict[str, int]:
        return {i: len(bearer.get(f"/api/instances/{i}/events").json()["events"]) for i in iids}

    def reconcile() -> PassReport:
        future = asyncio.run_coroutine_threadsafe(reconcile_once(ctx), server.server_loop)
        report: PassReport = future.result(30)
        return report

    provider.statuses, provider.status = counted_statuses, counted_status
    try:
        reconcile()  # starts the watches a create has not started yet
        before = events()
        batches.clear()
        report = reconcile()
        # Steady: one batch for the three, nothing asked one by one, nothing written.
        assert batches == [3] and not singles, (batches, singles)
        assert (report.rows, report.checked, report.acted) == (3, 3, 0)
        assert events() == before

        dead = iids[0]
        cgroup = provider.cgroup_of(_handle(dead))
        if cgroup.enabled:
            cgroup.kill()
        else:  # pragma: no cover - hosts without cgroups
            asyncio.run(provider.stop(_handle(dead)))
        wait_until_blocking(
            lambda: bearer.get(f"/api/instances/{dead}").json()["status"] == "error",
            "the dead machine's instance in error",
        )
        reconcile()
        after = events()
        # The dead one's change was recorded once (by its watch or the pass, whichever saw
        # it first); the others were not written.
        assert after[dead] == before[dead] + 1
        assert {i: after[i] for i in iids[1:]} == {i: before[i] for i in iids[1:]}
    finally:
        provider.statuses, provider.status = statuses, status
        for iid in iids:
            bearer.delete(f"/api/instances/{iid}")
