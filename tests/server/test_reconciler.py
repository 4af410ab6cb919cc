"""Reconciliation: dead machines are noticed, interrupted operations are finished or failed,
and instances outlive the server process."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from gentity.providers.compute.base import GuestLaunch, MachineHandle
from gentity.providers.compute.local.provider import LocalProvider
from gentity.server.db.database import Database
from gentity.server.db.ids import utcnow
from gentity.server.db.orm import Instance
from gentity.server.reconciler import reconcile_once
from gentity.server.services import instances
from gentity.settings import Settings
from tests.conftest import LiveServer
from tests.json_body import json_object
from tests.server.terminal_client import Terminal, ws_url
from tests.server.test_instances import create_shell


def _reconcile(server: LiveServer) -> None:
    ctx = server.app.state.ctx
    asyncio.run_coroutine_threadsafe(reconcile_once(ctx), server.server_loop).result(30)


def set_row(settings: Settings, iid: str, **values: object) -> None:
    async def run() -> None:
        db = Database(settings.resolved_database_url)
        async with db.session() as s:
            await s.execute(update(Instance).where(Instance.id == iid).values(**values))
            await s.commit()
        await db.close()

    asyncio.run(run())


@pytest.mark.local_only  # kills a local machine's processes
def test_dead_machine_is_marked_with_a_reason(
    server: LiveServer, bearer: httpx.Client, settings: Settings
) -> None:
    # Under "never", nothing restarts it (tests/faults/test_recovery.py has the others).
    iid = create_shell(bearer, restartPolicy="never")["id"]
    provider = server.app.state.ctx.providers.default
    assert isinstance(provider, LocalProvider)
    cgroup = provider.cgroup_of(_handle(iid))
    if cgroup.enabled:
        cgroup.kill()
    else:  # pragma: no cover - hosts without cgroups
        asyncio.run(provider.stop(_handle(iid)))
    _reconcile(server)
    instance = bearer.get(f"/api/instances/{iid}").json()
    assert instance["status"] == "error"
    assert instance["errorMessage"] == (
        "the guest daemon was killed by signal KILL; not restarted (restart policy never)"
    )
    # From error, it can be started again.
    assert bearer.post(f"/api/instances/{iid}/action", json={"action": "start"}).status_code == 200
    assert bearer.get(f"/api/instances/{iid}").json()["status"] == "running"
    bearer.delete(f"/api/instances/{iid}")


def _handle(iid: str) -> MachineHandle:
    return MachineHandle(ref=iid, data={"cpus": 1, "memoryMb": 512})


def test_interrupted_operations_are_settled(
    server: LiveServer, bearer: httpx.Client, settings: Settings
) -> None:
    stale = utcnow() - timedelta(minutes=10)
    # Left "starting" by a crash while the machine actually came up: completed.
    up = create_shell(bearer)["id"]
    set_row(settings, up, status="starting", updated_at=stale)
    # Left "stopping": completed.
    stopping = create_shell(bearer)["id"]
    set_row(settings, stopping, status="stopping", updated_at=stale)
    # Left "destroying": completed, machine and volume gone.
    doomed = create_shell(bearer)["id"]
    set_row(settings, doomed, status="destroying", updated_at=stale)
    # Left "restarting" with nothing running by an operation of a replica that stopped
    # renewing its lease: failed, with a reason. (Without an owner, "restarting" is the
    # agent's own restart: see tests/faults/test_recovery.py.)
    broken = create_shell(bearer)["id"]
    bearer.post(f"/api/instances/{broken}/action", json={"action": "stop"})
    set_row(
        settings,
        broken,
        status="restarting",
        updated_at=stale,
        operation_owner="another-node/0123456789abcdef",
    )
    # A fresh transitional row is someone's operation in flight: left alone.
    busy = create_shell(bearer)["id"]
    set_row(settings, busy, status="starting", updated_at=utcnow())

    _reconcile(server)

    def status(iid: str) -> dict[str, Any]:
        return json_object(bearer.get(f"/api/instances/{iid}").json())

    assert status(up)["status"] == "running"
    assert status(stopping)["status"] == "stopped"
    assert bearer.get(f"/api/instances/{doomed}").status_code == 404
    assert not (settings.data_dir / "instances" / doomed).exists()
    assert status(broken)["status"] == "error"
    assert "interrupted while restarting" in status(broken)["errorMessage"]
    assert status(busy)["status"] == "starting"
    for iid in (up, stopping, broken):
        bearer.delete(f"/api/instances/{iid}")
    set_row(settings, busy, status="running")
    bearer.delete(f"/api/instances/{busy}")


def test_instances_outlive_the_server(
    server_factory: Callable[[Settings], LiveServer], settings: Settings, token: str
) -> None:
    first = server_factory(settings)
    with httpx.Client(base_url=first.url, headers={"Authorization": f"Bearer {token}"}) as c:
        iid = create_shell(c)["id"]

    async def type_(base: str, text: str, marker: str) -> None:
        term = await Terminal.open(ws_url(base, iid, token))
        await term.send(text)
        await term.expect(marker)
        await term.close()

    asyncio.run(type_(first.url, "x=remembered\r", "remembered"))
    first.stop()
    second = server_factory(settings)
    with httpx.Client(base_url=second.url, headers={"Authorization": f"Bearer {token}"}) as c:
        assert c.get(f"/api/instances/{iid}").json()["status"] == "running"
        # The same shell session, with its state, not a new one.
        asyncio.run(type_(second.url, "echo $x-$((1+1))\r", "remembered-2"))
        assert c.delete(f"/api/instances/{iid}").status_code == 200


def test_a_guest_rebooted_behind_our_back_is_configured_again(
    server: LiveServer, bearer: httpx.Client, token: str
) -> None:
    """A machine its provider restarted on its own boots an unconfigured guest: the reconciler
    gives it its config (and secrets) again, and the agent runs."""
    iid = create_shell(bearer)["id"]
    ctx = server.app.state.ctx

    async def reboot_alone() -> None:
        async with ctx.db.session() as db:
            row = await db.get(Instance, iid)
        assert row is not None
        provider = instances.provider_for(ctx, row)
        handle, secret = instances.handle_of(row), instances.guest_secret(ctx, row)
        await provider.stop(handle)
        # As a provider's own restart would: a fresh guest, bootstrapped but not configured.
        await provider.start(handle, GuestLaunch(agent="shell", command=["true"], secret=secret))

    def on_server(coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, server.server_loop).result(60)

    on_server(reboot_alone())
    # The server's own reconciler loop may get there first; either way the same code runs.
    _reconcile(server)
    instance = json_object(bearer.get(f"/api/instances/{iid}").json())
    assert instance["status"] == "running", instance

    async def type_into_agent() -> str:
        term = await Terminal.open(ws_url(server.url, iid, token))
        try:
            await term.send("echo again-$((40+2))\r")
            return await term.expect("again-42")
        finally:
            await term.close()

    assert "again-42" in asyncio.run(type_into_agent())
    bearer.delete(f"/api/instances/{iid}")
