"""The agent's own health: starting, ready, back-off, crashed, exited, through real runs."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from tests.json_body import json_object

from .conftest import GuestFactory, GuestProc

pytestmark = pytest.mark.anyio


def agent(h: dict[str, Any]) -> dict[str, Any]:
    return json_object(h["agent"])


async def test_crash_backoff_and_recovery(guest_factory: GuestFactory, tmp_path: Path) -> None:
    volume = tmp_path / "volume"
    volume.mkdir()
    # Fails twice, then stays up waiting for input like an agent at its prompt.
    script = (
        "n=$(cat runs 2>/dev/null || echo 0); echo $((n+1)) > runs; "
        '[ "$n" -ge 2 ] || exit 3; echo "> "; exec cat'
    )
    guest: GuestProc = guest_factory(
        command=["bash", "-c", script], ready={"quietMs": 300}, restart="always"
    )
    info = await guest.wait_for(lambda h: agent(h)["state"] == "backoff")
    assert agent(info)["lastExitCode"] == 3 and agent(info)["lastExitAt"].endswith("Z")
    assert agent(info)["readyAt"] is None
    assert agent(info)["restartDelay"] > 0  # how long the back-off lasts
    info = await guest.wait_for(lambda h: agent(h)["state"] == "ready")
    assert agent(info)["restarts"] == 2 and agent(info)["lastExitCode"] == 3
    assert agent(info)["restartDelay"] is None
    assert agent(info)["readyAt"] >= agent(info)["lastExitAt"]
    assert "agent ready" in guest.log_text()


async def test_not_ready_until_the_prompt_shows(guest_factory: GuestFactory) -> None:
    script = 'echo loading; sleep 1; printf "\\033[1mMain>\\033[0m "; exec cat'
    guest: GuestProc = guest_factory(
        command=["bash", "-c", script], ready={"quietMs": 100, "pattern": r"Main> $"}
    )
    info = await guest.wait_for(lambda h: h["state"] == "running")
    # The sleep is the point: quiet for longer than quietMs after "loading", yet no prompt.
    await asyncio.sleep(0.5)
    assert agent(await guest.health())["state"] == "starting"
    info = await guest.wait_for(lambda h: agent(h)["state"] == "ready")
    assert agent(info)["restarts"] == 0 and agent(info)["lastExitCode"] is None


@pytest.mark.parametrize(("code", "state"), [(0, "exited"), (3, "crashed"), (-9, "crashed")])
async def test_end_states(guest_factory: GuestFactory, code: int, state: str) -> None:
    script = "kill -9 $$" if code < 0 else f"exit {code}"
    guest: GuestProc = guest_factory(command=["bash", "-c", script], restart="never")
    info = await guest.wait_for(lambda h: agent(h)["state"] == state)
    assert agent(info)["lastExitCode"] == (137 if code < 0 else code)


async def test_install_failure_is_a_crash(guest_factory: GuestFactory, tmp_path: Path) -> None:
    guest: GuestProc = guest_factory(
        install={
            "lockFile": str(tmp_path / "lock"),
            "marker": str(tmp_path / "marker"),
            "commands": [["bash", "-c", "echo 'npm error ECONNREFUSED'; exit 1"]],
        }
    )
    info = await guest.wait_for(lambda h: h["state"] == "error")
    assert agent(info)["state"] == "crashed" and "ECONNREFUSED" in info["error"]
