"""``gentity serve`` as a real subprocess, for tests that kill it or make its start fail."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

import httpx

from gentity.providers.compute.local.cgroups import InstanceCgroup
from tests.conftest import mint_token, signup
from tests.waiting import wait_until_blocking

REPO = Path(__file__).resolve().parents[2]
EMAIL = "admin@example.com"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def serve_env(data_dir: Path, database_url: str, **extra: str) -> dict[str, str]:
    """The environment of a server on ``data_dir``: no warm spares unless asked (each costs a
    sandbox start), and a reconciler that looks every second."""
    return {
        **os.environ,
        "GENTITY_DATA_DIR": str(data_dir),
        "GENTITY_DATABASE_URL": database_url,
        "GENTITY_RECONCILE_INTERVAL_SECONDS": "1",
        "GENTITY_LOCAL_WARM_SPARES": "0",
        **extra,
    }


class ServeProcess:
    """One ``gentity serve`` on a free port (or ``port``). With ``crash_dir``, it is started
    through :mod:`tests.faults.crashpoint`, which can hold operations at named steps."""

    def __init__(
        self,
        env: dict[str, str],
        log: Path,
        *,
        port: int | None = None,
        crash_dir: Path | None = None,
    ) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        module = "tests.faults.crashpoint" if crash_dir else "gentity.cli"
        extra = {"GENTITY_TEST_CRASH_DIR": str(crash_dir)} if crash_dir else {}
        command = [sys.executable, "-m", module, "serve", "--host", "127.0.0.1"]
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                [*command, "--port", str(self.port)],
                env={**env, **extra},
                cwd=REPO,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def wait_healthy(self, timeout: float = 60) -> ServeProcess:
        def healthy() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"gentity serve exited:\n{self.output()}")
            with contextlib.suppress(httpx.TransportError):
                return httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200
            return False

        wait_until_blocking(healthy, "the server answers /healthz", timeout)
        return self

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def kill(self) -> None:
        """``kill -9`` the server process alone: its instances outlive it by design."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()


def processes_mentioning(text: str) -> list[int]:
    """Processes whose command line contains ``text`` (a data directory: its instances')."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            with contextlib.suppress(OSError):
                if text.encode() in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
    return pids


def reap(data_dir: Path, instance_ids: Iterable[str]) -> None:
    """After a test that failed half-way: instances outlive their server by design, so kill
    whatever still runs for ``data_dir`` and remove the instances' cgroups."""
    for pid in processes_mentioning(str(data_dir)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for instance_id in instance_ids:
        with contextlib.suppress(OSError):
            InstanceCgroup(instance_id).remove()


def signed_in(server: ServeProcess) -> httpx.Client:
    """A client of ``server`` with a bearer token of its first (admin) account."""
    api = httpx.Client(base_url=server.url, timeout=120)
    assert signup(api, EMAIL).status_code == 200
    api.headers["Authorization"] = f"Bearer {mint_token(api)}"
    api.cookies.clear()
    return api
