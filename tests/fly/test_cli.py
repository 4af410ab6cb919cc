"""``python -m gentity.testing.fakefly`` as a process of its own."""

from __future__ import annotations

import re
import select
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from gentity.testing.fakefly import create_app
from tests.conftest import LiveServer
from tests.fly.conftest import machine_processes

ANNOUNCEMENT = re.compile(r"^fakefly: API (http://\S+)/v1, edge 127\.0\.0\.1:(\d+), CA (\S+)$")


@pytest.mark.usefixtures("sandboxes")
def test_serves_runs_image_commands_and_cleans_up_on_sigterm(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gentity.testing.fakefly",
            "--port=0",
            f"--ca-file={tmp_path / 'ca.pem'}",
            f"--state-dir={tmp_path / 'state'}",
            "--region=ams",
            "--image=registry.fly.io/sleeper:1=sleep 300",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert select.select([process.stdout], [], [], 30)[0], "no announcement"
        announced = ANNOUNCEMENT.match(process.stdout.readline().strip())
        assert announced is not None
        url, edge_port, ca_file = announced.groups()
        assert int(edge_port) > 0 and Path(ca_file) == tmp_path / "ca.pem"
        assert "BEGIN CERTIFICATE" in Path(ca_file).read_text()

        with httpx.Client(base_url=f"{url}/v1", headers={"Authorization": "Bearer t"}) as api:
            assert api.post("/apps", json={"name": "gentity-cl-cli"}).status_code == 201
            # No init command: the image table gives the command.
            config = {"image": "registry.fly.io/sleeper:1"}
            machine = api.post("/apps/gentity-cl-cli/machines", json={"config": config}).json()
            assert machine["region"] == "ams"
            waited = api.get(
                f"/apps/gentity-cl-cli/machines/{machine['id']}/wait",
                params={"state": "started", "timeout": 30},
                timeout=40,
            )
            assert waited.status_code == 200, waited.text
        assert machine_processes(machine["id"]) != []
    finally:
        process.send_signal(signal.SIGTERM)
        # uvicorn shuts down gracefully, then dies of the signal it caught, as is proper.
        assert process.wait(timeout=30) == -signal.SIGTERM
    assert machine_processes(machine["id"]) == []


def test_a_state_directory_of_its_own_is_removed_at_shutdown() -> None:
    server = LiveServer(create_app()).start()
    state_dir = server.app.state.fleet.state_dir
    assert (state_dir / "ca.pem").exists()  # the edge's CA, by default
    server.stop()
    assert not state_dir.exists()
