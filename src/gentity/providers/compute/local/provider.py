"""The ``local`` compute provider: instances as sandboxed process trees on this host.

Each instance gets ``<data dir>/instances/<id>/`` with ``volume/`` (the agent's home and working
directory, kept across stop/start) and ``logs/``, and a short-path runtime directory for the
guest's unix socket. The guest daemon is started detached from the server (its own session, not
a child the server waits on), so restarting ``gentity serve`` leaves instances running; the next
server finds them again through their cgroups or their recorded process id.

Limits: CPU and memory are enforced by cgroup v1 controllers when writable; the volume size is
not enforced (the directory is a plain directory on the host filesystem).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import shutil
import signal
import stat
import subprocess
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import anyio.to_thread

from gentity.guest import client as guest_client
from gentity.guest.logfile import LogWriter, follow_offsets, offset_before_last, tail
from gentity.providers.compute.base import (
    ComputeProvider,
    GuestLaunch,
    MachineHandle,
    MachineSpec,
    MachineState,
    MachineStatus,
    ProviderError,
)
from gentity.providers.compute.local import processes
from gentity.providers.compute.local.cgroups import InstanceCgroup
from gentity.providers.compute.local.install import bin_dir, cache_dir, ensure_installed
from gentity.providers.compute.local.sandbox import (
    DEFAULT_PATH,
    InstancePaths,
    bwrap_path,
    guest_command,
    guest_environment,
    sandbox_argv,
)
from gentity.settings import Settings

log = logging.getLogger(__name__)

GUEST_READY_TIMEOUT = 20.0
GUEST_STOP_GRACE = 8.0
# Joins the instance's cgroups *before* exec'ing the sandbox, so no process of the instance
# ever runs outside them (writing the pid afterwards would race with the first fork).
_JOIN_CGROUPS = (
    'IFS=:; for f in $GENTITY_CGROUP_PROCS; do echo $$ > "$f" || exit 97; done; '
    'unset GENTITY_CGROUP_PROCS; exec "$@"'
)


class LocalProvider(ComputeProvider):
    """Runs every instance on this host. See the module docstring for the layout."""

    name = "local"

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.instances_dir = data_dir / "instances"
        self.agents_dir = data_dir / "agents"
        # Unix socket paths are limited to 107 bytes, and data directories can be deep: the
        # sockets live in a short per-data-directory runtime directory instead.
        digest = hashlib.sha256(str(data_dir).encode()).hexdigest()[:12]
        self.runtime_dir = Path(f"/tmp/gentity-{os.getuid()}/{digest}")  # noqa: S108

    @classmethod
    def from_settings(cls, settings: Settings) -> LocalProvider:
        return cls(settings.data_dir)

    def paths(self, handle: MachineHandle) -> InstancePaths:
        return InstancePaths.under(self.instances_dir, handle.ref, self.runtime_dir)

    # --- lifecycle ------------------------------------------------------------------------

    async def create(self, spec: MachineSpec) -> MachineHandle:
        handle = MachineHandle(
            ref=spec.instance_id,
            data={"cpus": spec.cpus, "memoryMb": spec.memory_mb, "hostname": spec.subdomain},
        )
        paths = self.paths(handle)
        self._ensure_runtime_dir()
        for directory in (paths.root, paths.volume, paths.logs, paths.run):
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        return handle

    def _ensure_runtime_dir(self) -> None:
        # /tmp is shared with every user of the host: refuse a directory someone else made
        # (or a symlink) where our sockets are about to go.
        for directory in (self.runtime_dir.parent, self.runtime_dir):
            directory.mkdir(mode=0o700, exist_ok=True)
            info = directory.lstat()
            if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
                raise ProviderError(f"{directory} is not a directory owned by this user")
            if stat.S_IMODE(info.st_mode) & 0o077:
                directory.chmod(0o700)

    async def start(self, handle: MachineHandle, launch: GuestLaunch) -> None:
        if (await self.status(handle)).state is MachineState.RUNNING:
            return
        paths = self.paths(handle)
        if not paths.volume.is_dir():
            raise ProviderError("the instance's volume is missing")
        self._ensure_runtime_dir()
        paths.run.mkdir(exist_ok=True, mode=0o700)
        extra_path: list[str] = []
        readonly: list[Path] = []
        if launch.install is not None:
            with LogWriter(paths.log_file) as writer:
                await anyio.to_thread.run_sync(
                    ensure_installed, self.agents_dir, launch.agent, launch.install, writer
                )
            extra_path.append(str(bin_dir(self.agents_dir, launch.agent)))
            readonly.append(cache_dir(self.agents_dir, launch.agent))
        process = await anyio.to_thread.run_sync(
            self._spawn, handle, paths, launch, extra_path, readonly
        )
        await self._wait_until_ready(handle, paths, launch.secret, process)

    def _spawn(
        self,
        handle: MachineHandle,
        paths: InstancePaths,
        launch: GuestLaunch,
        extra_path: list[str],
        readonly: list[Path],
    ) -> subprocess.Popen[bytes]:
        cgroup = InstanceCgroup(handle.ref)
        if cgroup.enabled:
            cgroup.create(cpus=int(handle.data["cpus"]), memory_mb=int(handle.data["memoryMb"]))
        env = guest_environment(paths, extra_path)
        bwrap = bwrap_path()
        if bwrap:
            argv = sandbox_argv(
                bwrap=bwrap,
                paths=paths,
                data_dir=self.data_dir,
                hostname=str(handle.data.get("hostname", handle.ref)),
                readonly_paths=readonly,
                env=env,
                command=guest_command(),
            )
            spawn_env = {"PATH": DEFAULT_PATH}
        else:
            argv, spawn_env = guest_command(), env
        if cgroup.enabled:
            argv = ["/bin/sh", "-c", _JOIN_CGROUPS, "sh", *argv]
            spawn_env = {**spawn_env, "GENTITY_CGROUP_PROCS": ":".join(cgroup.procs_files())}
        with contextlib.suppress(FileNotFoundError):
            paths.socket.unlink()
        config = {
            "secret": launch.secret,
            "listen": f"unix:{paths.socket}",
            "logFile": str(paths.log_file),
            "workdir": str(paths.volume),
            "command": launch.command,
            "shell": ["bash", "-l"],
            "env": {**env, **launch.agent_env},
            "restart": launch.restart,
        }
        with (paths.logs / "guest.out").open("ab") as out:
            process = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=spawn_env,
                cwd=paths.volume,
                start_new_session=True,  # no signal from the server's terminal reaches it
                close_fds=True,
            )
        assert process.stdin is not None
        # The secrets travel over this pipe only: not argv, not the environment, not a file.
        with process.stdin:
            process.stdin.write(json.dumps(config).encode())
        processes.record(paths.pid_file, process.pid)
        # Reap it when it ends while this server runs; after a server restart, init does.
        threading.Thread(target=process.wait, name=f"reap-{handle.ref}", daemon=True).start()
        return process

    async def _wait_until_ready(
        self,
        handle: MachineHandle,
        paths: InstancePaths,
        secret: str,
        process: subprocess.Popen[bytes],
    ) -> None:
        deadline = time.monotonic() + GUEST_READY_TIMEOUT
        while True:
            if paths.socket.exists():
                with contextlib.suppress(guest_client.GuestError):
                    await guest_client.health(self.guest_address(handle), secret, timeout=2)
                    return
            if process.poll() is not None:
                raise ProviderError(f"the guest daemon exited: {self._last_output(paths)}")
            if time.monotonic() > deadline:
                await self.stop(handle)
                raise ProviderError("the guest daemon did not answer within 20 s")
            await asyncio.sleep(0.02)

    async def stop(self, handle: MachineHandle) -> None:
        await anyio.to_thread.run_sync(self._stop_sync, handle)

    def _stop_sync(self, handle: MachineHandle) -> None:
        paths = self.paths(handle)
        pids = self._pids(handle)
        # First ask the guest to shut down (it stops the agent gracefully), then make sure.
        guests = [p for p in pids if processes.is_guest(p)]
        for pid in guests:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + GUEST_STOP_GRACE
        while any(processes.alive(p) for p in guests) and time.monotonic() < deadline:
            time.sleep(0.02)
        cgroup = InstanceCgroup(handle.ref)
        if cgroup.enabled:
            cgroup.kill()
        processes.kill_tree(self._pids(handle))
        with contextlib.suppress(FileNotFoundError):
            paths.socket.unlink()
        processes.forget(paths.pid_file)

    async def destroy(self, handle: MachineHandle) -> None:
        await self.stop(handle)
        paths = self.paths(handle)

        def remove() -> None:
            InstanceCgroup(handle.ref).remove()
            shutil.rmtree(paths.root, ignore_errors=True)
            shutil.rmtree(paths.run, ignore_errors=True)
            if paths.root.exists():
                raise ProviderError(f"could not remove {paths.root}")

        await anyio.to_thread.run_sync(remove)

    async def status(self, handle: MachineHandle) -> MachineStatus:
        paths = self.paths(handle)
        if not paths.root.exists():
            return MachineStatus(MachineState.MISSING)
        if self._pids(handle):
            return MachineStatus(MachineState.RUNNING)
        return MachineStatus(MachineState.STOPPED, self._last_output(paths))

    def guest_address(self, handle: MachineHandle) -> str:
        return f"unix:{self.paths(handle).socket}"

    # --- logs -----------------------------------------------------------------------------

    async def tail_logs(self, handle: MachineHandle, lines: int) -> list[dict[str, str]]:
        records = await anyio.to_thread.run_sync(tail, self.paths(handle).log_file, lines)
        return [dict(r) for r in records]

    async def log_cursor_before(self, handle: MachineHandle, lines: int) -> str:
        path = self.paths(handle).log_file
        return str(await anyio.to_thread.run_sync(offset_before_last, path, lines))

    async def follow_logs(
        self, handle: MachineHandle, cursor: str | None = None
    ) -> AsyncIterator[tuple[str, dict[str, str]]]:
        start = int(cursor) if cursor and cursor.isdigit() else None
        stream = follow_offsets(self.paths(handle).log_file, start=start)
        try:
            async for offset, record in stream:
                yield str(offset), dict(record)
        finally:
            await stream.aclose()

    # --- helpers --------------------------------------------------------------------------

    def _pids(self, handle: MachineHandle) -> set[int]:
        """Every live process of the instance."""
        cgroup = InstanceCgroup(handle.ref)
        if cgroup.enabled:
            return cgroup.pids()
        root = processes.recorded(self.paths(handle).pid_file)
        return processes.tree(root) if root else set()

    @staticmethod
    def _last_output(paths: InstancePaths) -> str:
        with contextlib.suppress(OSError):
            lines = (paths.logs / "guest.out").read_bytes()[-2000:].decode(errors="replace")
            for line in reversed(lines.splitlines()):
                if line.strip() and not line.startswith('{"ready"'):
                    return line.strip()
        return "no output"
