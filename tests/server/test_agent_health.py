"""The agent's health on instances: ready, crash, back-off and recovery, through the API."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.json_body import json_object
from tests.server.terminal_client import Terminal, ws_url

from .test_instances import create_shell


def wait_agent(
    client: httpx.Client, iid: str, check: Callable[[dict[str, Any]], bool], timeout: float = 40.0
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        one = json_object(client.get(f"/api/instances/{iid}").json())
        if one["agent"] is not None and check(one["agent"]):
            return one
        assert time.monotonic() < deadline, one
        time.sleep(0.1)


def crash_agent(client: httpx.Client, iid: str, token: str) -> None:
    """The agent exits with code 7 (typed into its terminal), which its guest reports."""

    async def crash() -> None:
        term = await Terminal.open(ws_url(str(client.base_url), iid, token))
        await term.send("exit 7\r")
        await term.close()

    asyncio.run(crash())
    one = wait_agent(client, iid, lambda a: a["lastExitCode"] == 7)
    # The machine runs; the agent is between restarts, or already restarted.
    assert one["status"] in ("restarting", "running")


def test_agent_health_through_crash_and_recovery(bearer: httpx.Client, token: str) -> None:
    iid = create_shell(bearer)["id"]
    one = wait_agent(bearer, iid, lambda a: a["state"] == "ready")
    agent = one["agent"]
    assert agent["restarts"] == 0 and agent["lastExitCode"] is None
    assert agent["readyAt"] is not None and agent["lastExitAt"] is None
    listed = bearer.get("/api/instances").json()["instances"]
    assert listed[0]["agent"]["state"] == "ready"

    crash_agent(bearer, iid, token)
    one = wait_agent(bearer, iid, lambda a: a["state"] == "ready" and a["restarts"] == 1)
    assert one["agent"]["lastExitAt"] <= one["agent"]["readyAt"]

    assert bearer.post(f"/api/instances/{iid}/action", json={"action": "stop"}).status_code == 200
    stopped = bearer.get(f"/api/instances/{iid}").json()
    assert stopped["status"] == "stopped" and stopped["agent"] is None
    assert bearer.delete(f"/api/instances/{iid}").status_code == 200


def test_listing_running_instances_asks_no_guest(
    bearer: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A running instance's health comes from its watch, which its guest answers at every
    change: listing does not cost a guest round trip per instance, and still shows a crash."""
    from gentity.guest import client as guest_client

    asked: list[str] = []
    health = guest_client.health

    async def counted(*args: Any, **kwargs: Any) -> dict[str, Any]:
        asked.append("health")
        return await health(*args, **kwargs)

    monkeypatch.setattr(guest_client, "health", counted)
    iid = create_shell(bearer)["id"]
    wait_agent(bearer, iid, lambda a: a["state"] == "ready")
    asked.clear()
    for _ in range(5):
        listed = json_object(bearer.get("/api/instances").json())["instances"]
        assert listed[0]["agent"]["state"] == "ready"
    assert json_object(bearer.get(f"/api/instances/{iid}").json())["agent"]["state"] == "ready"
    assert asked == []


def test_an_idle_watch_waits_again_without_reading_the_row(
    bearer: httpx.Client, token: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A wait that ends with nothing new (the guest's version unchanged) is followed by the
    next wait at once, without a look at the instance's row; a change is still followed."""
    from gentity.guest import client as guest_client
    from gentity.server import recovery

    monkeypatch.setattr(recovery, "WATCH_SECONDS", 0.2)
    waits: list[float] = []
    rows_read: list[str] = []
    wait, watched = guest_client.wait, recovery.watched

    async def counted_wait(*args: Any, **kwargs: Any) -> dict[str, Any]:
        waits.append(time.monotonic())
        return await wait(*args, **kwargs)

    def counted_watched(ctx: Any, row: Any) -> bool:
        if sys._getframe(1).f_code.co_name == "_watch_loop":  # not the reconciler's look
            rows_read.append(row.id)
        return watched(ctx, row)

    monkeypatch.setattr(guest_client, "wait", counted_wait)
    monkeypatch.setattr(recovery, "watched", counted_watched)
    iid = create_shell(bearer)["id"]
    wait_agent(bearer, iid, lambda a: a["state"] == "ready")
    time.sleep(0.5)  # past the answers of the start itself
    waits.clear()
    rows_read.clear()
    time.sleep(2.0)
    assert len(waits) >= 5, waits
    assert rows_read == []

    crash_agent(bearer, iid, token)
    assert iid in rows_read
    wait_agent(bearer, iid, lambda a: a["state"] == "ready" and a["restarts"] == 1)
    assert bearer.delete(f"/api/instances/{iid}").status_code == 200
