"""A full disk under the data directory: writes answer 503, nothing is lost, and the server
recovers by itself once there is space again (see docs/operations.md, "SQLite locked or disk
full"). The data directory is a small tmpfs, so the disk really fills."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import require
from tests.faults.serve import ServeProcess, reap, serve_env, signed_in
from tests.server.test_instances import SHELL, create_shell
from tests.waiting import wait_until_blocking

SIZE = "24m"


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 24 MiB tmpfs under the test's directory, unmounted afterwards."""
    require(os.geteuid() == 0, "root, to mount a tmpfs")
    mountpoint = tmp_path / "small"
    mountpoint.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={SIZE},mode=0700", "tmpfs", str(mountpoint)],
        check=True,
    )
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "--lazy", str(mountpoint)], check=True)


def fill(path: Path) -> None:
    """Write ``path`` until the file system has no byte left."""
    with path.open("wb", buffering=0) as out:
        for size in (1 << 20, 1 << 12, 1):
            with contextlib.suppress(OSError):
                while True:
                    out.write(b"\0" * size)


def mint(api: httpx.Client, name: str) -> httpx.Response:
    return api.post("/api/tokens", json={"name": name})


def test_a_full_disk_is_an_outage_not_a_loss(tmp_path: Path, small_disk: Path) -> None:
    data_dir = small_disk / "data"
    env = serve_env(data_dir, f"sqlite:///{data_dir / 'gentity.db'}")
    server = ServeProcess(env, tmp_path / "server.log").wait_healthy()
    api = signed_in(server)
    try:
        assert mint(api, "before").status_code == 200
        kept = create_shell(api)["id"]
        filler = small_disk / "filler"
        fill(filler)
        assert os.statvfs(small_disk).f_bavail == 0

        # Writes fail as an outage (503, the canonical body), however many are tried...
        for attempt in range(5):
            refused = mint(api, f"during-{attempt}")
            assert refused.status_code == 503, refused.text
            assert refused.json() == {"error": "The database is unavailable; try again shortly"}
            assert refused.headers["Retry-After"] == "5"
        refused = api.post("/api/instances", json=SHELL)
        assert refused.status_code == 503, refused.text
        # ...while what was written stays readable and the process stays alive.
        assert server.process.poll() is None
        assert httpx.get(f"{server.url}/healthz").status_code == 200
        names = [t["name"] for t in api.get("/api/tokens").json()["tokens"]]
        assert "before" in names and not any(n.startswith("during") for n in names)
        listed = api.get("/api/instances").json()["instances"]
        assert [(i["id"], i["status"]) for i in listed] == [(kept, "running")]
        assert sorted(p.name for p in (data_dir / "instances").iterdir()) == [kept]

        filler.unlink()
        wait_until_blocking(
            lambda: mint(api, "after").status_code == 200, "writes succeed again", 15
        )
        names = [t["name"] for t in api.get("/api/tokens").json()["tokens"]]
        assert {"before", "after"} <= set(names)
        assert api.delete(f"/api/instances/{kept}").status_code == 200
        assert "Traceback" not in server.output()
    finally:
        server.stop()
        api.close()
        reap(data_dir, [p.name for p in (data_dir / "instances").glob("*")])
