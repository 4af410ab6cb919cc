"""``python -m gentity.testing.stack``: the whole production path on the fakes, as a user runs
it, from a shell instance's create to its destroy and the stack's stop."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from gentity.testing.stack import FAKE_TOKEN
from tests.conftest import PASSWORD, require
from tests.faults.serve import EMAIL, REPO, free_port, processes_mentioning
from tests.server.test_instances import SHELL
from tests.waiting import wait_until_blocking


def test_the_stack_serves_instances_on_the_fakes(tmp_path: Path) -> None:
    require(os.geteuid() == 0 and shutil.which("bwrap") is not None, "root and bubblewrap")
    data_dir, out = tmp_path / "data", tmp_path / "stack.out"
    port = free_port()
    env = {
        **os.environ,
        "GENTITY_DATA_DIR": str(data_dir),
        "GENTITY_PORT": str(port),
        "GENTITY_BASE_DOMAIN": "stack.test",
    }
    users_create = ["users", "create", "--admin", "--email", EMAIL, "--password-stdin"]
    created = subprocess.run(
        [sys.executable, "-m", "gentity.cli", *users_create, "--create-database"],
        input=PASSWORD,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert created.returncode == 0, created.stderr
    with out.open("w") as log:
        stack = subprocess.Popen(
            [sys.executable, "-m", "gentity.testing.stack"],
            env=env,
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:

        def up() -> bool:
            assert stack.poll() is None, out.read_text()
            try:
                return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wait_until_blocking(up, "the stack serves", 90)
        found = re.search(r"fakes: Fly API (\S+), Cloudflare API (\S+) ", out.read_text())
        assert found, out.read_text()
        fly, cloudflare = (
            httpx.Client(base_url=base, headers={"Authorization": f"Bearer {FAKE_TOKEN}"})
            for base in found.groups()
        )
        with httpx.Client(base_url=url, timeout=120) as api:
            login = {"email": EMAIL, "password": PASSWORD}
            assert api.post("/api/auth/login", json=login).status_code == 200
            response = api.post("/api/instances", json=SHELL)
            assert response.status_code == 200, response.text
            instance = response.json()
            app = f"gentity-{instance['id']}"
            assert fly.get(f"/v1/apps/{app}").status_code == 200
            (zone,) = cloudflare.get("/zones").json()["result"]
            records = cloudflare.get(f"/zones/{zone['id']}/dns_records").json()["result"]
            assert [r["name"] for r in records] == [f"{instance['subdomain']}.stack.test"]
            assert api.delete(f"/api/instances/{instance['id']}").status_code == 200
            assert fly.get(f"/v1/apps/{app}").status_code == 404
            assert cloudflare.get(f"/zones/{zone['id']}/dns_records").json()["result"] == []
    finally:
        stack.send_signal(signal.SIGTERM)
        stack.wait(timeout=60)
    # The server and both fakes are gone, and with them every machine the fake ran.
    assert processes_mentioning("gentity.testing.fake") == []
    assert processes_mentioning(str(data_dir)) == []
