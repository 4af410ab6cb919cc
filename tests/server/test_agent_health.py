"""The agent's health on instances: ready, crash, back-off and recovery, through the API."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx

from tests.json_body import json_object
from tests.server.terminal_client import Terminal, ws_url

from .test_instances import create_shell


def wait_agent(
    client: httpx.Client, iid: str, check: Callable[[dict[str, Any]], bool], timeout: float = 20.0
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        one = json_object(client.get(f"/api/instances/{iid}").json())
        if one["agent"] is not None and check(one["agent"]):
            return one
        assert time.monotonic() < deadline, one
        time.sleep(0.1)


def test_agent_health_through_crash_and_recovery(bearer: httpx.Client, token: str) -> None:
    iid = create_shell(bearer)["id"]
    one = wait_agent(bearer, iid, lambda a: a["state"] == "ready")
    agent = one["agent"]
    assert agent["restarts"] == 0 and agent["lastExitCode"] is None
    assert agent["readyAt"] is not None and agent["lastExitAt"] is None
    listed = bearer.get("/api/instances").json()["instances"]
    assert listed[0]["agent"]["state"] == "ready"

    async def crash() -> None:
        term = await Terminal.open(ws_url(str(bearer.base_url), iid, token))
        await term.send("exit 7\r")
        await term.close()

    asyncio.run(crash())
    one = wait_agent(bearer, iid, lambda a: a["lastExitCode"] == 7)
    # The machine runs; the agent is between restarts, or already restarted.
    assert one["status"] in ("restarting", "running")
    one = wait_agent(bearer, iid, lambda a: a["state"] == "ready" and a["restarts"] == 1)
    assert one["agent"]["lastExitAt"] <= one["agent"]["readyAt"]

    assert bearer.post(f"/api/instances/{iid}/action", json={"action": "stop"}).status_code == 200
    stopped = bearer.get(f"/api/instances/{iid}").json()
    assert stopped["status"] == "stopped" and stopped["agent"] is None
    assert bearer.delete(f"/api/instances/{iid}").status_code == 200
