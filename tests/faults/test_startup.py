"""Start-up touches nothing shared until it holds its port, and then only what is its own.

A server whose port is taken exits with one line and leaves the data directory, the database
and the host's cgroups as they were; servers on different data directories of one host each
keep their own instances and spares across the other's restart.
"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gentity.providers.compute.local.cgroups import InstanceCgroup, capabilities, spare_prefix
from tests.conftest import require
from tests.faults.serve import ServeProcess, serve_env, signed_in
from tests.server.test_instances import create_shell
from tests.waiting import wait_until_blocking


def group_paths(group: InstanceCgroup) -> list[Path]:
    return [*group.v1.values(), *([group.v2] if group.v2 else [])]


@pytest.fixture
def abandoned_groups() -> Iterator[list[InstanceCgroup]]:
    """Spare groups a test plants as a killed server leaves them; removed afterwards."""
    require(InstanceCgroup("probe").enabled, "writable cgroups")
    planted: list[InstanceCgroup] = []
    yield planted
    for group in planted:
        group.remove()


def exists(group: InstanceCgroup) -> bool:
    return all(path.is_dir() for path in group_paths(group))


def test_a_taken_port_changes_nothing(
    tmp_path: Path, abandoned_groups: list[InstanceCgroup]
) -> None:
    first_dir, fresh_dir = tmp_path / "first", tmp_path / "fresh"
    first_db = f"sqlite:///{first_dir / 'gentity.db'}"
    # A spare of the first data directory left by a killed server: its directory, and a
    # process in its cgroups (which keeps them safe from any host-wide sweep meanwhile).
    name = f"{spare_prefix(first_dir)}abandoned"
    leftover = first_dir / "instances" / name
    group = InstanceCgroup(name, capabilities())
    spare = subprocess.Popen(["sleep", "300"])
    try:
        first = ServeProcess(serve_env(first_dir, first_db), tmp_path / "first.log")
        try:
            first.wait_healthy()
            # A fresh data directory: not even created, so certainly not migrated.
            second = ServeProcess(
                serve_env(fresh_dir, f"sqlite:///{fresh_dir / 'gentity.db'}"),
                tmp_path / "second.log",
                port=first.port,
            )
            assert second.process.wait(timeout=30) == 1
            assert second.output().splitlines() == [
                f"Error: cannot listen on 127.0.0.1:{first.port}: Address already in use"
            ]
            assert not fresh_dir.exists()

            # The first server's data directory: its predecessor's spare stays as it is.
            leftover.mkdir(parents=True)
            group.create(cpus=1, memory_mb=64)
            abandoned_groups.append(group)
            for procs in group.procs_files():
                Path(procs).write_text(str(spare.pid))
            third = ServeProcess(
                serve_env(first_dir, first_db), tmp_path / "third.log", port=first.port
            )
            assert third.process.wait(timeout=30) == 1
            assert leftover.is_dir() and exists(group) and spare.poll() is None
        finally:
            first.stop()

        # Once it may, a server on that data directory does sweep it up: the checks above
        # could fail.
        again = ServeProcess(serve_env(first_dir, first_db), tmp_path / "again.log")
        try:
            again.wait_healthy()
            assert spare.wait(timeout=10) == -signal.SIGKILL
            assert not exists(group) and not leftover.exists()
        finally:
            again.stop()
    finally:
        spare.kill()
        spare.wait()


def test_servers_on_one_host_keep_their_own_instances_and_spares(tmp_path: Path) -> None:
    require(capabilities().v1 != (), "writable cgroup v1 controllers")
    servers: dict[str, ServeProcess] = {}
    envs: dict[str, dict[str, str]] = {}
    clients: dict[str, httpx.Client] = {}
    instances: dict[str, str] = {}
    try:
        for name in ("a", "b"):
            data_dir = tmp_path / name
            envs[name] = serve_env(
                data_dir, f"sqlite:///{data_dir / 'gentity.db'}", GENTITY_LOCAL_WARM_SPARES="1"
            )
            servers[name] = ServeProcess(envs[name], tmp_path / f"{name}.log").wait_healthy()
            clients[name] = signed_in(servers[name])
            instances[name] = create_shell(clients[name])["id"]
        spare_of_b = wait_for_spare(tmp_path / "b")

        # Server a restarts: its start-up sweep (done once it answers) must not reach b's
        # spare or b's instance. (That the sweep of empty old groups takes only a data
        # directory's own is tested in tests/providers/test_local.py: a group planted here
        # would be fair game for a server of an older version starting on this host.)
        servers["a"].stop()
        servers["a"] = ServeProcess(envs["a"], tmp_path / "a.log").wait_healthy()
        clients["a"].base_url = httpx.URL(servers["a"].url)
        assert wait_for_spare(tmp_path / "a")
        assert InstanceCgroup(spare_of_b).pids()
        assert (tmp_path / "b" / "instances" / spare_of_b).is_dir()
        for name in ("a", "b"):
            listed = clients[name].get("/api/instances").json()["instances"]
            assert [(i["id"], i["status"]) for i in listed] == [(instances[name], "running")]
    finally:
        for name, server in servers.items():
            if name in instances and server.process.poll() is None:
                clients[name].delete(f"/api/instances/{instances[name]}")
            server.stop()
        for client in clients.values():
            client.close()


def wait_for_spare(data_dir: Path) -> str:
    """The name of a warm spare of ``data_dir`` once one is running."""
    prefix = spare_prefix(data_dir)

    def spares() -> list[str]:
        found = (data_dir / "instances").glob(f"{prefix}*")
        return [p.name for p in found if InstanceCgroup(p.name).pids()]

    wait_until_blocking(lambda: bool(spares()), f"a warm spare of {data_dir} runs", 60)
    return spares()[0]
