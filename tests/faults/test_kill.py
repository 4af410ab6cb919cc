"""``kill -9`` of a real ``gentity serve`` at each step of create, stop, restart and destroy.

One server holds ten operations, each at a different step (see :mod:`tests.faults.crashpoint`),
and is killed with all of them under way. The next server on the same data directory and
database must settle every one within seconds, and once the instances are deleted nothing may
remain: no process, cgroup, directory or live row.
"""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import httpx

from gentity.providers.compute.local.cgroups import InstanceCgroup
from gentity.providers.compute.local.provider import LocalProvider
from tests.conftest import PASSWORD, mint_token
from tests.faults.serve import EMAIL, ServeProcess, processes_mentioning, reap, serve_env, signed_in
from tests.server.test_instances import SHELL, create_shell
from tests.waiting import wait_until_blocking

CONVERGENCE_SECONDS = 10

# The step a server dies at → the status the next server settles the instance at.
# A create is armed through a ``new-<n>`` file: its provider create, then its first start.
CREATES = {
    "create:before": "error",  # nothing made yet
    "create:after": "error",  # directories made, the machine's handle not saved
    "start:before": "error",  # handle saved, never booted
    "start:after": "running",  # booted: the agent runs, only the row was not told
}
ACTIONS = {
    "stop:before": ("stop", "stopped"),
    "stop:after": ("stop", "stopped"),
    "restart:before": ("restart", "running"),
    "restart:after": ("restart", "running"),
    "destroy:before": ("delete", "destroyed"),
    "destroy:after": ("delete", "destroyed"),
}


def fire(api: httpx.Client, action: str, instance_id: str) -> str | None:
    """Send the request that the server will be killed under. Its answer never comes: one
    that does (returned here) means the operation was not held at its step."""
    try:
        if action == "create":
            response = api.post("/api/instances", json=SHELL)
        elif action == "delete":
            response = api.delete(f"/api/instances/{instance_id}")
        else:
            response = api.post(f"/api/instances/{instance_id}/action", json={"action": action})
    except httpx.TransportError:
        return None
    return f"{action} {instance_id} answered {response.status_code} {response.text}"


def leftovers(data_dir: Path, runtime_dir: Path, instance_id: str) -> list[str]:
    """What the host still holds of the instance: its directories and cgroups."""
    paths = [data_dir / "instances" / instance_id, runtime_dir / instance_id]
    found = [str(p) for p in paths if p.exists()]
    group = InstanceCgroup(instance_id)
    found += [str(p) for p in [*group.v1.values(), *([group.v2] if group.v2 else [])] if p.exists()]
    return found


def test_kill_9_at_every_step_of_every_operation(tmp_path: Path, database_url: str) -> None:
    data_dir, crash_dir = tmp_path / "data", tmp_path / "crash"
    crash_dir.mkdir()
    env = serve_env(data_dir, database_url)
    try:
        held = kill_with_operations_held(env, tmp_path, crash_dir)
        assert sorted(held.values()) == sorted([*CREATES, *ACTIONS])
        expected = {i: CREATES[s] if s in CREATES else ACTIONS[s][1] for i, s in held.items()}
        settle_and_clean_up(env, tmp_path, data_dir, held, expected)
        assert processes_mentioning(str(data_dir)) == []
    finally:
        armed = {p.name.split(".")[0] for p in crash_dir.iterdir()}
        reap(data_dir, armed - {p.name for p in crash_dir.glob("new-*")})


def kill_with_operations_held(
    env: dict[str, str], tmp_path: Path, crash_dir: Path
) -> dict[str, str]:
    """Hold one operation at each step, ``kill -9`` the server; which instance held where."""
    doomed = ServeProcess(env, tmp_path / "doomed.log", crash_dir=crash_dir).wait_healthy()
    api = signed_in(doomed)
    pool = ThreadPoolExecutor(max_workers=len(CREATES) + len(ACTIONS))
    in_flight: list[Future[str | None]] = []
    try:
        existing = [create_shell(api)["id"] for _ in ACTIONS]
        steps = dict(zip(existing, ACTIONS, strict=True))
        for number, step in enumerate(CREATES):
            (crash_dir / f"new-{number}").write_text(step)
        for instance_id, step in steps.items():
            (crash_dir / instance_id).write_text(step)
        in_flight += [pool.submit(fire, api, "create", "") for _ in CREATES]
        in_flight += [pool.submit(fire, api, ACTIONS[s][0], i) for i, s in steps.items()]
        total = len(CREATES) + len(ACTIONS)

        def all_held() -> bool:
            answered = [f.result() for f in in_flight if f.done()]
            assert not answered, f"not held: {answered}"
            return len(list(crash_dir.glob("*.reached"))) == total

        wait_until_blocking(all_held, "every operation is held", 90)
    finally:
        doomed.kill()
        for future in in_flight:
            future.exception(timeout=30)
        pool.shutdown()
        api.close()
    ids = [p.name.removesuffix(".reached") for p in crash_dir.glob("*.reached")]
    return {i: step_of(crash_dir, i) for i in ids}


def settle_and_clean_up(
    env: dict[str, str],
    tmp_path: Path,
    data_dir: Path,
    held: dict[str, str],
    expected: dict[str, str],
) -> None:
    """Start the next server, check what it settles and how fast, then delete everything and
    check that nothing is left."""
    started = time.monotonic()
    survivor = ServeProcess(env, tmp_path / "survivor.log")
    api = httpx.Client(base_url=survivor.url, timeout=120)
    try:
        survivor.wait_healthy()
        assert api.post("/api/auth/login", json={"email": EMAIL, "password": PASSWORD}).is_success
        api.headers["Authorization"] = f"Bearer {mint_token(api)}"

        def statuses() -> dict[str, str]:
            listed = api.get("/api/instances").json()["instances"]
            found = {i["id"]: i["status"] for i in listed}
            return {i: found.get(i, "destroyed") for i in expected}

        wait_until_blocking(lambda: statuses() == expected, "every operation settles", 30)
        settled = time.monotonic() - started
        assert settled < CONVERGENCE_SECONDS, f"settled in {settled:.1f} s"
        runtime_dir = LocalProvider(data_dir).runtime_dir
        for instance_id, status in expected.items():
            if status == "destroyed" or held[instance_id] in ("create:before", "create:after"):
                # Destroyed, or created without a saved handle: nothing of it may be on the host.
                assert leftovers(data_dir, runtime_dir, instance_id) == []
            if status in ("stopped", "error"):
                assert not InstanceCgroup(instance_id).pids()
        for instance_id, status in expected.items():
            if status != "destroyed":
                assert api.delete(f"/api/instances/{instance_id}").status_code == 200
        assert api.get("/api/instances").json()["instances"] == []
        for instance_id in expected:
            assert leftovers(data_dir, runtime_dir, instance_id) == []
    finally:
        survivor.stop()
        api.close()


def step_of(crash_dir: Path, instance_id: str) -> str:
    return (crash_dir / instance_id).read_text().strip()
