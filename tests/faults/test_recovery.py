"""Instance-level recovery: the agent or the guest daemon killed (``kill -9``) inside a real local
instance, under each restart policy.

The API must show what happened at once, with a reason naming the exit, and then do what the
policy says: restart (the agent by its guest, the machine by the control plane) or leave the
instance down in ``error``. Nothing may be left running afterwards.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from gentity.providers.compute.base import MachineHandle
from gentity.providers.compute.local import processes
from gentity.providers.compute.local.cgroups import InstanceCgroup
from gentity.providers.compute.local.provider import LocalProvider
from gentity.settings import Settings
from tests.faults.serve import processes_mentioning
from tests.server.terminal_client import Terminal, ws_url
from tests.server.test_instances import create_shell
from tests.server.test_reconciler import set_row
from tests.waiting import wait_until_blocking

pytestmark = pytest.mark.local_only

# The watch sees a change as the guest reports it; the slowest step is a machine's new boot.
SEEN_SECONDS = 5
RECOVERED_SECONDS = 30


@pytest.fixture(autouse=True)
def _no_warm_spares(monkeypatch: pytest.MonkeyPatch) -> None:
    # Every process under the data directory is then the instance's: none may outlive it.
    monkeypatch.setenv("GENTITY_LOCAL_WARM_SPARES", "0")


@pytest.fixture
def settings(settings_factory: Callable[..., Settings]) -> Settings:
    # No reconciler pass after the first, at start-up: what follows is the watches' doing.
    return settings_factory(reconcile_interval_seconds=3600)


def _cmdline(pid: int) -> list[bytes]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return []


def _ppid(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def guest_pid(settings: Settings, iid: str) -> int:
    """The host pid of the instance's guest daemon (not the bubblewrap processes around it)."""
    pids = LocalProvider(settings.data_dir)._pids(MachineHandle(ref=iid))
    guests = [
        pid
        for pid in pids
        if b"gentity.guest" in _cmdline(pid) and not _cmdline(pid)[0].endswith(b"bwrap")
    ]
    assert len(guests) == 1, guests
    return guests[0]


def agent_pid(settings: Settings, iid: str) -> int:
    guest = guest_pid(settings, iid)
    pids = LocalProvider(settings.data_dir)._pids(MachineHandle(ref=iid))
    agents = [pid for pid in pids if _ppid(pid) == guest and _cmdline(pid)[0] == b"bash"]
    assert len(agents) == 1, agents
    return agents[0]


def instance(api: httpx.Client, iid: str) -> dict[str, Any]:
    one: dict[str, Any] = api.get(f"/api/instances/{iid}").json()
    return one


def events(api: httpx.Client, iid: str) -> list[dict[str, Any]]:
    """The instance's status changes, oldest first."""
    found: list[dict[str, Any]] = api.get(f"/api/instances/{iid}/events").json()["events"]
    return found[::-1]


def wait_for_event(
    api: httpx.Client, iid: str, match: Callable[[dict[str, Any]], bool], what: str, after: int
) -> dict[str, Any]:
    """The first event after the ``after``-th that ``match``es, once it is recorded."""
    found: list[dict[str, Any]] = []

    def seen() -> bool:
        found[:] = [e for e in events(api, iid)[after:] if match(e)]
        return bool(found)

    wait_until_blocking(seen, what, RECOVERED_SECONDS)
    return found[0]


def running_ready(api: httpx.Client, iid: str) -> None:
    def ready() -> bool:
        one = instance(api, iid)
        return one["status"] == "running" and (one["agent"] or {}).get("state") == "ready"

    wait_until_blocking(ready, "the instance runs and its agent is ready", RECOVERED_SECONDS)


def assert_nothing_left(api: httpx.Client, settings: Settings, iid: str) -> None:
    assert api.delete(f"/api/instances/{iid}").status_code == 200
    left = processes_mentioning(str(settings.data_dir / "instances"))
    assert left == [], [_cmdline(pid)[:3] for pid in left]
    assert not (settings.data_dir / "instances" / iid).exists()
    group = InstanceCgroup(iid)
    assert not [p for p in [*group.v1.values(), *([group.v2] if group.v2 else [])] if p.exists()]


def kill(pid: int) -> float:
    os.kill(pid, signal.SIGKILL)
    return time.monotonic()


def test_killed_agent_is_restarted_and_the_api_says_so(
    bearer: httpx.Client, settings: Settings
) -> None:
    iid = create_shell(bearer)["id"]
    assert instance(bearer, iid)["restartPolicy"] == "always"
    running_ready(bearer, iid)
    before = len(events(bearer, iid))

    killed = kill(agent_pid(settings, iid))
    down = wait_for_event(
        bearer, iid, lambda e: e["to"] == "restarting", "the instance is restarting", before
    )
    assert down["from"] == "running"
    assert re.fullmatch(
        r"agent exited with signal KILL; restarting( in [0-9.]+ s)?", down["reason"]
    )
    assert down["actor"] == "reconciler"
    up = wait_for_event(
        bearer, iid, lambda e: e["from"] == "restarting", "the instance runs again", before
    )
    assert (up["to"], up["reason"]) == ("running", "agent running again")
    assert time.monotonic() - killed < SEEN_SECONDS
    running_ready(bearer, iid)
    assert instance(bearer, iid)["agent"]["restarts"] == 1
    assert_nothing_left(bearer, settings, iid)


def test_killed_agent_under_never_stays_down(bearer: httpx.Client, settings: Settings) -> None:
    iid = create_shell(bearer, restartPolicy="never")["id"]
    assert instance(bearer, iid)["restartPolicy"] == "never"
    running_ready(bearer, iid)
    before = len(events(bearer, iid))

    killed = kill(agent_pid(settings, iid))
    down = wait_for_event(bearer, iid, lambda e: e["to"] == "error", "the instance fails", before)
    assert time.monotonic() - killed < SEEN_SECONDS
    assert (down["from"], down["reason"]) == ("running", "agent exited with signal KILL")
    one = instance(bearer, iid)
    assert (
        one["errorMessage"] == "agent exited with signal KILL; not restarted (restart policy never)"
    )
    # Its machine is stopped, so a start boots it afresh.
    wait_until_blocking(
        lambda: not processes_mentioning(str(settings.data_dir / "instances" / iid)),
        "the machine is stopped",
    )
    started = bearer.post(f"/api/instances/{iid}/action", json={"action": "start"})
    assert started.status_code == 200, started.text
    running_ready(bearer, iid)
    assert_nothing_left(bearer, settings, iid)


def test_killed_guest_is_restarted_under_always(bearer: httpx.Client, settings: Settings) -> None:
    iid = create_shell(bearer)["id"]
    running_ready(bearer, iid)
    before = len(events(bearer, iid))

    killed = kill(guest_pid(settings, iid))
    down = wait_for_event(bearer, iid, lambda e: e["to"] == "error", "the instance fails", before)
    assert time.monotonic() - killed < SEEN_SECONDS
    assert (down["from"], down["reason"]) == (
        "running",
        "the guest daemon was killed by signal KILL",
    )
    again = wait_for_event(
        bearer, iid, lambda e: e["to"] == "starting", "the machine is restarted", before
    )
    assert again["reason"] == "restarting automatically (attempt 1 of 5)"
    up = wait_for_event(bearer, iid, lambda e: e["to"] == "running", "it runs again", before)
    assert up["reason"] == "agent running"
    running_ready(bearer, iid)  # its guest answers health again
    assert instance(bearer, iid)["errorMessage"] is None
    assert_nothing_left(bearer, settings, iid)


def test_a_whole_machine_killed_is_restarted(bearer: httpx.Client, settings: Settings) -> None:
    iid = create_shell(bearer)["id"]
    running_ready(bearer, iid)
    before = len(events(bearer, iid))
    every = LocalProvider(settings.data_dir)._pids(MachineHandle(ref=iid))
    assert len(every) > 2  # the sandbox, the guest, the agent

    killed = time.monotonic()
    # Every process of the sandbox at once, as the OOM killer or a reboot would.
    processes.kill_tree(every)
    down = wait_for_event(bearer, iid, lambda e: e["to"] == "error", "the instance fails", before)
    assert time.monotonic() - killed < SEEN_SECONDS
    assert down["reason"] == "the guest daemon was killed by signal KILL"
    up = wait_for_event(bearer, iid, lambda e: e["to"] == "running", "it runs again", before)
    assert up["from"] == "starting"
    running_ready(bearer, iid)
    assert_nothing_left(bearer, settings, iid)


def test_killed_guest_is_noticed_even_with_a_process_left_behind(
    bearer: httpx.Client, settings: Settings, token: str
) -> None:
    # The instance leaves a process that outlives its guest (its own session, deaf to the
    # hang-up): the machine must not pass for running because something of it still is.
    iid = create_shell(bearer)["id"]
    running_ready(bearer, iid)

    async def leave_a_process() -> None:
        term = await Terminal.open(ws_url(str(bearer.base_url), iid, token))
        await term.send("setsid nohup sleep 987654 >/dev/null 2>&1 & echo left-$((6*7))\r")
        await term.expect("left-42")
        await term.close()

    asyncio.run(leave_a_process())

    def lingering() -> list[int]:
        return [p for p in processes_mentioning("987654") if _cmdline(p)[0] == b"sleep"]

    wait_until_blocking(lambda: len(lingering()) == 1, "the process is left running")
    before = len(events(bearer, iid))
    killed = kill(guest_pid(settings, iid))
    down = wait_for_event(bearer, iid, lambda e: e["to"] == "error", "the instance fails", before)
    assert time.monotonic() - killed < SEEN_SECONDS
    assert down["reason"] == "the guest daemon is not running"
    wait_for_event(bearer, iid, lambda e: e["to"] == "running", "it runs again", before)
    running_ready(bearer, iid)
    assert lingering() == []  # stopped with the rest of the old machine
    assert_nothing_left(bearer, settings, iid)


def test_killed_guest_under_never_stays_in_error(bearer: httpx.Client, settings: Settings) -> None:
    iid = create_shell(bearer, restartPolicy="never")["id"]
    running_ready(bearer, iid)
    before = len(events(bearer, iid))

    killed = kill(guest_pid(settings, iid))
    down = wait_for_event(bearer, iid, lambda e: e["to"] == "error", "the instance fails", before)
    assert time.monotonic() - killed < SEEN_SECONDS
    assert down["reason"] == "the guest daemon was killed by signal KILL"
    wait_until_blocking(
        lambda: not processes_mentioning(str(settings.data_dir / "instances" / iid)),
        "whatever was left of the machine is stopped",
    )
    # A while later, it is still down, as it was left.
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        one = instance(bearer, iid)
        assert one["status"] == "error"
        assert one["errorMessage"] == (
            "the guest daemon was killed by signal KILL; not restarted (restart policy never)"
        )
        time.sleep(0.2)
    assert events(bearer, iid)[-1] == down
    assert_nothing_left(bearer, settings, iid)


def test_actions_wait_for_a_restart_operation_but_not_for_the_agent(
    bearer: httpx.Client, settings: Settings
) -> None:
    iid = create_shell(bearer)["id"]
    # A restart operation under way (its owner's lease is fresh): nothing else may start.
    set_row(settings, iid, status="restarting", operation_owner="another-node/0123456789ab")
    refused = bearer.post(f"/api/instances/{iid}/action", json={"action": "stop"})
    assert refused.status_code == 409
    assert refused.json() == {"error": "cannot stop the instance while it is being restarted"}
    # The agent's own restart (no operation): a stop goes ahead.
    set_row(settings, iid, status="restarting", operation_owner=None)
    stopped = bearer.post(f"/api/instances/{iid}/action", json={"action": "stop"})
    assert stopped.status_code == 200, stopped.text
    assert instance(bearer, iid)["status"] == "stopped"
    assert_nothing_left(bearer, settings, iid)
