"""A real ``gentity serve`` in a subprocess, on a free port, with a fresh data directory.

Everything it starts is cleaned up by :meth:`BenchServer.close`, which is safe to call after
any failure (and on Ctrl-C): instances are deleted through the API, the server is stopped, any
process left in one of our instances' cgroups (or mentioning our data directory) is killed, and
the data and runtime directories are removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

EMAIL = "bench@example.com"
CGROUP_ROOT = Path("/sys/fs/cgroup")
SHELL_INSTANCE = {"agentType": "shell", "modelProvider": "none", "modelName": "bash"}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def gentity_bin() -> str:
    """The ``gentity`` script next to this interpreter (the venv's)."""
    candidate = Path(sys.executable).parent / "gentity"
    return str(candidate) if candidate.exists() else "gentity"


class ServerError(Exception):
    pass


class BenchServer:
    """``async with BenchServer() as server:`` — a signed-in bearer client in ``server.api``."""

    def __init__(self, parent: str | None = None, *, database_url: str | None = None) -> None:
        self.data_dir = Path(tempfile.mkdtemp(prefix="gentity-bench-", dir=parent)).resolve()
        self.database_url = database_url
        """None: SQLite in the data directory."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.password = secrets.token_urlsafe(18)
        self.env = {**os.environ, "GENTITY_DATA_DIR": str(self.data_dir)}
        if database_url is not None:
            self.env["GENTITY_DATABASE_URL"] = database_url
        self.log_path = self.data_dir / "server.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.token = ""
        self._api: httpx.AsyncClient | None = None
        self.instances: set[str] = set()
        """Instances created and not yet confirmed deleted."""
        self.created_ever: set[str] = set()
        digest = hashlib.sha256(str(self.data_dir).encode()).hexdigest()[:12]
        self.runtime_dir = Path(f"/tmp/gentity-{os.getuid()}/{digest}")

    @property
    def api(self) -> httpx.AsyncClient:
        if self._api is None:
            raise ServerError("the server is not started")
        return self._api

    # --- start ----------------------------------------------------------------------------

    async def __aenter__(self) -> BenchServer:
        try:
            await self.start()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def start(self) -> None:
        with self.log_path.open("ab") as out:
            self.process = subprocess.Popen(
                [gentity_bin(), "serve", "--host", "127.0.0.1", "--port", str(self.port)],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                # Its own session: Ctrl-C in our terminal must not stop it before we have
                # deleted its instances through the API.
                start_new_session=True,
            )
        async with httpx.AsyncClient(base_url=self.url, timeout=30) as anon:
            await self._wait_healthy(anon)
            await self._create_account()
            login = await anon.post(
                "/api/auth/login", json={"email": EMAIL, "password": self.password}
            )
            _check(login, "sign in")
            minted = await anon.post("/api/tokens", json={"name": "bench"})
            _check(minted, "mint a token")
            self.token = str(minted.json()["token"])
        self._api = httpx.AsyncClient(
            base_url=self.url,
            timeout=httpx.Timeout(120, connect=10),
            headers={"Authorization": f"Bearer {self.token}"},
        )

    async def _wait_healthy(self, client: httpx.AsyncClient) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise ServerError(f"gentity serve exited early:\n{self.log_tail()}")
            with contextlib.suppress(httpx.TransportError):
                if (await client.get("/healthz", timeout=2)).status_code == 200:
                    return
            await asyncio.sleep(0.1)
        raise ServerError(f"gentity serve did not become healthy in 60 s:\n{self.log_tail()}")

    async def _create_account(self) -> None:
        proc = await asyncio.create_subprocess_exec(
            gentity_bin(),
            "users",
            "create",
            "--admin",
            "--email",
            EMAIL,
            "--password-stdin",
            env=self.env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        try:
            output, _ = await proc.communicate((self.password + "\n").encode())
        except BaseException:
            # Cancelled (Ctrl-C): a surviving child would re-create the data directory after
            # clean-up removed it.
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await asyncio.shield(proc.wait())
            raise
        if proc.returncode != 0:
            raise ServerError(f"gentity users create failed: {output.decode(errors='replace')}")

    # --- instances ------------------------------------------------------------------------

    async def create_shell(self) -> str:
        """Create a shell instance (blocks until running) and return its id."""
        response = await self.api.post("/api/instances", json=SHELL_INSTANCE)
        _check(response, "create an instance")
        instance_id = str(response.json()["id"])
        self.instances.add(instance_id)
        self.created_ever.add(instance_id)
        return instance_id

    async def delete(self, instance_id: str) -> None:
        response = await self.api.delete(f"/api/instances/{instance_id}")
        if response.status_code == 404:
            self.instances.discard(instance_id)
            return
        _check(response, "delete an instance")
        self.instances.discard(instance_id)

    async def action(self, instance_id: str, action: str) -> None:
        response = await self.api.post(
            f"/api/instances/{instance_id}/action", json={"action": action}
        )
        _check(response, f"{action} an instance")

    def instance_dir(self, instance_id: str) -> Path:
        return self.data_dir / "instances" / instance_id

    def cgroup_name(self, instance_id: str) -> str:
        """The instance's cgroup name: its own id, or the warm spare's it took over."""
        try:
            return (self.instance_dir(instance_id) / "cgroup").read_text().strip() or instance_id
        except OSError:
            return instance_id

    @property
    def pid(self) -> int:
        """The ``gentity serve`` process (its instances' processes are under it)."""
        if self.process is None:
            raise ServerError("the server is not running")
        return self.process.pid

    def ws_url(self, instance_id: str, extra: str = "") -> str:
        base = self.url.replace("http://", "ws://")
        query = f"token={self.token}" + (f"&{extra}" if extra else "")
        return f"{base}/api/instances/{instance_id}/terminal?{query}"

    # --- clean-up -------------------------------------------------------------------------

    async def close(self) -> None:
        """Delete instances, stop the server, kill leftovers, remove directories."""
        try:
            if self._api is not None and self.process is not None and self.process.poll() is None:
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(60):
                        await self._delete_all()
            if self._api is not None:
                with contextlib.suppress(Exception):
                    await self._api.aclose()
        finally:
            self._stop_server()
            self._kill_leftovers()
            shutil.rmtree(self.runtime_dir, ignore_errors=True)
            shutil.rmtree(self.data_dir, ignore_errors=True)

    async def _delete_all(self) -> None:
        """Delete every instance the server knows (also one whose create we never saw
        answered), retrying while an operation on it is still under way (409)."""
        listed = await self.api.get("/api/instances", timeout=10)
        if listed.status_code == 200:
            for item in listed.json().get("instances", []):
                if item.get("status") != "destroyed":
                    self.instances.add(str(item["id"]))
                    self.created_ever.add(str(item["id"]))
        for instance_id in sorted(self.instances):
            for _ in range(40):
                response = await self.api.delete(f"/api/instances/{instance_id}")
                if response.status_code != 409:
                    break
                await asyncio.sleep(0.5)
            if response.status_code in (200, 404):
                self.instances.discard(instance_id)

    def _stop_server(self) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)

    def _kill_leftovers(self) -> None:
        """Instances are detached from the server by design: make sure none of ours survive."""
        for _ in range(3):
            pids = self._leftover_pids()
            if not pids:
                break
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.2)
        for instance_id in self.created_ever:
            for group in instance_cgroups(instance_id):
                with contextlib.suppress(OSError):
                    group.rmdir()

    def _leftover_pids(self) -> set[int]:
        pids: set[int] = set()
        for instance_id in self.created_ever:
            for group in instance_cgroups(instance_id):
                with contextlib.suppress(OSError, ValueError):
                    pids.update(int(x) for x in (group / "cgroup.procs").read_text().split())
        marker = str(self.data_dir).encode()
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError):
                    if marker in (entry / "cmdline").read_bytes():
                        pids.add(int(entry.name))
        pids.discard(os.getpid())
        return pids

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return "(no server log)"

    def log_problems(self) -> list[str]:
        """Tracebacks and ERROR lines in the server's own log."""
        found: list[str] = []
        with contextlib.suppress(OSError):
            for line in self.log_path.read_text(errors="replace").splitlines():
                if " ERROR " in line or line.startswith("Traceback") or " WARNING " in line:
                    found.append(line.strip())
        return found


def instance_cgroups(group: str) -> list[Path]:
    """The cgroup directories (any hierarchy) named ``group`` (see ``cgroup_name``)."""
    found = []
    with contextlib.suppress(OSError):
        for hierarchy in CGROUP_ROOT.iterdir():
            path = hierarchy / "gentity" / group
            if path.is_dir():
                found.append(path)
    return found


def _check(response: httpx.Response, what: str) -> Any:
    if response.status_code >= 400:
        raise ServerError(f"could not {what}: HTTP {response.status_code} {response.text[:500]}")
    return response
