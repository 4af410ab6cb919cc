"""The fake Fly API on a real port, and a client of it."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from gentity.providers.compute.fly.api import FlyApi
from gentity.providers.compute.fly.errors import FlyApiError
from gentity.testing.fakefly import create_app
from gentity.testing.fakefly.fleet import Fleet
from tests.conftest import LiveServer, require

TOKEN = "fo1_test-token-0123456789"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class FakeFly:
    server: LiveServer
    ca_file: Path
    state_dir: Path

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def edge_port(self) -> int:
        port: int = self.server.app.state.edge.port
        return port

    @property
    def fleet(self) -> Fleet:
        fleet: Fleet = self.server.app.state.fleet
        return fleet

    def control(self, method: str, path: str, json: object = None) -> httpx.Response:
        """A call to the fake's test controls (``/__fake__``)."""
        response = httpx.request(method, f"{self.url}/__fake__{path}", json=json, timeout=10)
        assert response.status_code < 300, response.text
        return response

    def fault(self, method: str, path: str, times: int = 1, **behaviour: object) -> None:
        self.control(
            "POST",
            "/faults",
            {"match": {"method": method, "path": path}, "times": times, **behaviour},
        )


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[FakeFly]:
    state_dir, ca_file = tmp_path / "fakefly", tmp_path / "ca.pem"
    server = LiveServer(create_app(state_dir, ca_file=ca_file)).start()
    try:
        yield FakeFly(server, ca_file, state_dir)
    finally:
        server.stop()


@pytest.fixture
def sandboxes() -> None:
    """Tests whose machines really run need bubblewrap, slirp4netns and root."""
    require(shutil.which("bwrap") is not None, "bubblewrap (bwrap)")
    require(shutil.which("slirp4netns") is not None, "slirp4netns")
    require(os.geteuid() == 0, "root (the fake sandboxes machines as root)")


@pytest.fixture
async def api(fake: FakeFly) -> AsyncIterator[FlyApi]:
    async with FlyApi(TOKEN, base_url=fake.url, logs_url=fake.url, timeout=5) as client:
        yield client


def machine_processes(machine_id: str) -> list[int]:
    """Host pids of anything still running for a fake machine: its sandbox (named after it) and
    every process that has its ``FLY_MACHINE_ID``."""
    marker, variable = machine_id.encode(), f"FLY_MACHINE_ID={machine_id}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            environ = Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if marker in argv or variable in environ:
            found.append(int(entry))
    return found


async def wait_started(api: FlyApi, app: str, machine_id: str) -> None:
    """Wait until the machine runs; on failure, say what its events and log say."""
    try:
        await api.wait_machine(app, machine_id, "started", seconds=30)
    except FlyApiError as exc:
        events = await api.machine_events(app, machine_id)
        output = [e["message"] for e in (await api.logs(app, instance=machine_id)).entries]
        raise AssertionError(f"{exc}; events {events}; output {output}") from exc
