"""``kill -9`` of a server on the fake Fly at every step of every operation: the next server
settles each instance, and once everything is deleted no Fly app, machine or volume is left."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from tests.conftest import PASSWORD
from tests.faults.serve import EMAIL, ServeProcess, serve_env
from tests.faults.test_kill import ACTIONS, CONVERGENCE_SECONDS, CREATES, kill_with_operations_held
from tests.fly.conftest import TOKEN, FakeFly
from tests.waiting import wait_until_blocking


def test_kill_9_at_every_step_on_fly(
    fake: FakeFly, sandboxes: None, tmp_path: Path, database_url: str
) -> None:
    data_dir, crash_dir = tmp_path / "data", tmp_path / "crash"
    crash_dir.mkdir()
    env = serve_env(
        data_dir,
        database_url,
        GENTITY_COMPUTE_PROVIDER="fly",
        GENTITY_FLY_API_URL=fake.url,
        GENTITY_FLY_LOGS_URL=fake.url,
        GENTITY_FLY_API_TOKEN=TOKEN,
        GENTITY_FLY_EDGE=f"127.0.0.1:{fake.edge_port}",
        GENTITY_FLY_CA_FILE=str(fake.ca_file),
    )
    held = kill_with_operations_held(env, tmp_path, crash_dir)
    assert sorted(held.values()) == sorted([*CREATES, *ACTIONS])
    expected = {i: CREATES[s] if s in CREATES else ACTIONS[s][1] for i, s in held.items()}

    started = time.monotonic()
    survivor = ServeProcess(env, tmp_path / "survivor.log").wait_healthy()
    api = httpx.Client(base_url=survivor.url, timeout=120)
    try:
        assert api.post("/api/auth/login", json={"email": EMAIL, "password": PASSWORD}).is_success

        def statuses() -> dict[str, str]:
            listed = api.get("/api/instances").json()["instances"]
            found = {i["id"]: i["status"] for i in listed}
            return {i: found.get(i, "destroyed") for i in expected}

        wait_until_blocking(lambda: statuses() == expected, "every operation settles", 30)
        settled = time.monotonic() - started
        assert settled < CONVERGENCE_SECONDS, f"settled in {settled:.1f} s"
        # A create killed before its handle was saved left no app behind it.
        unrecorded = [i for i, s in held.items() if s in ("create:before", "create:after")]
        assert not {f"gentity-{i}" for i in unrecorded} & set(fake.fleet.apps)
        for instance_id, status in expected.items():
            if status != "destroyed":
                assert api.delete(f"/api/instances/{instance_id}").status_code == 200
        assert api.get("/api/instances").json()["instances"] == []
        assert not fake.fleet.apps  # apps take their machines and volumes with them
    finally:
        survivor.stop()
        api.close()
