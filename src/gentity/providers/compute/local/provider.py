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
import secrets
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
from gentity.guest.logfile import (
    LogWriter,
    Redactor,
    follow_offsets,
    offset_before_last,
    tail,
)
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
from gentity.providers.compute.local.cgroups import InstanceCgroup, sweep_abandoned_spare_groups
from gentity.providers.compute.local.install import bin_dir, ensure_installed
from gentity.providers.compute.local.sandbox import (
    DEFAULT_PATH,
    SANDBOX_HOME,
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

    def __init__(
        self, data_dir: Path, *, warm_spares: int = 0, key_dir: Path | None = None
    ) -> None:
        self.data_dir = data_dir
        self.warm_spares = warm_spares
        # The directory of a key file kept outside the data directory: hidden like it.
        self.key_dir = key_dir
        self._spares: list[tuple[InstancePaths, subprocess.Popen[bytes]]] = []
        self._spares_lock = threading.Lock()
        self._refilling: asyncio.Future[None] | None = None
        self._closed = False
        self.instances_dir = data_dir / "instances"
        self.agents_dir = data_dir / "agents"
        # Unix socket paths are limited to 107 bytes, and data directories can be deep: the
        # sockets live in a short per-data-directory runtime directory instead.
        digest = hashlib.sha256(str(data_dir).encode()).hexdigest()[:12]
        self.runtime_dir = Path(f"/tmp/gentity-{os.getuid()}/{digest}")  # noqa: S108

    @classmethod
    def from_settings(cls, settings: Settings) -> LocalProvider:
        key_file = settings.resolved_secret_key_file
        key_dir = None if key_file.is_relative_to(settings.data_dir) else key_file.parent
        return cls(settings.data_dir, warm_spares=settings.local_warm_spares, key_dir=key_dir)

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
        if launch.install is not None:
            redact = Redactor(launch.secret_values())
            with LogWriter(paths.log_file, redact=redact) as writer:
                await anyio.to_thread.run_sync(
                    ensure_installed, self.agents_dir, launch.agent, launch.install, writer
                )
            extra_path.append(str(bin_dir(self.agents_dir, launch.agent)))
        process = await anyio.to_thread.run_sync(self._boot, handle, paths)
        sandboxed = bwrap_path() is not None
        view = paths.view(sandboxed)
        env = guest_environment(view.home, extra_path)
        config = {
            "secret": launch.secret,
            "listen": f"unix:{view.socket}",
            "logFile": view.log_file,
            "workdir": view.home,
            "command": launch.command,
            "shell": ["bash", "-l"],
            "env": {**env, **launch.agent_env},
            "secretEnv": list(launch.secret_env),
            "restart": launch.restart,
            "hostname": str(handle.data.get("hostname", handle.ref)),
        }
        # The secrets travel over this pipe only: not argv, not the environment, not a file.
        await anyio.to_thread.run_sync(_send_config, process, json.dumps(config).encode())
        await self._wait_until_ready(handle, paths, launch.secret, process)
        if self.warm_spares:
            self._refill_soon()

    def _boot(self, handle: MachineHandle, paths: InstancePaths) -> subprocess.Popen[bytes]:
        """A sandboxed guest waiting for its config: a warm spare when one fits, else new."""
        cpus, memory_mb = int(handle.data["cpus"]), int(handle.data["memoryMb"])
        spare = self._take_spare(paths)
        if spare is not None:
            # The spare's directories become the instance's; its processes keep running.
            spare_paths, process = spare
            shutil.rmtree(paths.root)
            os.rename(spare_paths.root, paths.root)
            paths.run.rmdir()
            os.rename(spare_paths.run, paths.run)
            # cgroup v2 directories cannot be renamed: the instance keeps the spare's groups.
            InstanceCgroup(spare_paths.root.name).create(cpus=cpus, memory_mb=memory_mb)
            return process
        return self._spawn(handle.ref, paths, cpus=cpus, memory_mb=memory_mb)

    def _spawn(
        self, ref: str, paths: InstancePaths, *, cpus: int, memory_mb: int
    ) -> subprocess.Popen[bytes]:
        """Start the sandbox and the guest in it; the guest then waits for its config."""
        cgroup = InstanceCgroup(ref)
        if cgroup.enabled:
            cgroup.create(cpus=cpus, memory_mb=memory_mb)
        (paths.root / "cgroup").write_text(ref)
        bwrap = bwrap_path()
        self.agents_dir.mkdir(parents=True, exist_ok=True)
        if bwrap:
            argv = sandbox_argv(
                bwrap=bwrap,
                paths=paths,
                data_dir=self.data_dir,
                hidden_dirs=[self.key_dir] if self.key_dir else [],
                hostname=ref[:63],
                readonly_paths=[self.agents_dir],
                env=guest_environment(SANDBOX_HOME, []),
                command=guest_command(),
            )
            spawn_env = {"PATH": DEFAULT_PATH}
        else:
            argv, spawn_env = guest_command(), guest_environment(str(paths.volume), [])
        if cgroup.enabled:
            argv = ["/bin/sh", "-c", _JOIN_CGROUPS, "sh", *argv]
            spawn_env = {**spawn_env, "GENTITY_CGROUP_PROCS": ":".join(cgroup.procs_files())}
        with contextlib.suppress(FileNotFoundError):
            paths.socket.unlink()
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
        processes.record(paths.pid_file, process.pid)
        # Reap it when it ends while this server runs; after a server restart, init does.
        threading.Thread(target=process.wait, name=f"reap-{ref}", daemon=True).start()
        return process

    # --- warm spares ----------------------------------------------------------------------
    #
    # Most of a cold start is the guest's interpreter starting and importing. A spare is a
    # sandbox whose guest has done that and waits for its config; a new instance takes one
    # over by renaming the spare's directories and cgroups to its own. Only a brand-new
    # instance can (its volume is empty, like the spare's); later starts boot cold. A spare
    # whose server goes away reads end-of-file instead of a config, and exits.

    def _take_spare(
        self, paths: InstancePaths
    ) -> tuple[InstancePaths, subprocess.Popen[bytes]] | None:
        fresh = not any(paths.volume.iterdir()) and not any(paths.logs.iterdir())
        if not fresh or bwrap_path() is None:
            return None
        with self._spares_lock:
            while self._spares:
                spare_paths, process = self._spares.pop()
                if process.poll() is None:
                    return spare_paths, process
                self._discard_spare(spare_paths, process)
        return None

    def _refill_soon(self) -> None:
        if self._refilling is None or self._refilling.done():
            self._refilling = asyncio.get_running_loop().create_task(
                anyio.to_thread.run_sync(self._refill)
            )

    def _refill(self) -> None:
        while len(self._spares) < self.warm_spares and not self._closed:
            ref = f".spare-{secrets.token_hex(6)}"
            paths = InstancePaths.under(self.instances_dir, ref, self.runtime_dir)
            self._ensure_runtime_dir()
            for directory in (paths.root, paths.volume, paths.logs, paths.run):
                directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            # Spares get the smallest limits until an instance takes one over.
            process = self._spawn(ref, paths, cpus=1, memory_mb=512)
            if not self._wait_for_waiting(paths, process):
                self._discard_spare(paths, process)
                log.warning("a warm spare failed to start: %s", self._last_output(paths))
                return
            with self._spares_lock:
                self._spares.append((paths, process))

    @staticmethod
    def _wait_for_waiting(paths: InstancePaths, process: subprocess.Popen[bytes]) -> bool:
        """Until the guest says it waits for its config (its sandbox is complete by then)."""
        deadline = time.monotonic() + GUEST_READY_TIMEOUT
        out = paths.logs / "guest.out"
        while process.poll() is None and time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                if b'"waiting"' in out.read_bytes():
                    return True
            time.sleep(0.005)
        return False

    def _discard_spare(self, paths: InstancePaths, process: subprocess.Popen[bytes]) -> None:
        with contextlib.suppress(OSError):
            if process.stdin:
                process.stdin.close()  # end-of-file: the waiting guest exits by itself
        cgroup = InstanceCgroup(paths.root.name)
        if cgroup.enabled:
            cgroup.kill()
            cgroup.remove()
        processes.kill_tree(processes.tree(process.pid))
        shutil.rmtree(paths.root, ignore_errors=True)
        shutil.rmtree(paths.run, ignore_errors=True)

    async def adopt(self) -> None:
        def sweep() -> None:
            # Spares of a previous server: their guests have exited; remove what is left.
            for root in (self.instances_dir, self.runtime_dir):
                for leftover in root.glob(".spare-*") if root.is_dir() else []:
                    cgroup = InstanceCgroup(leftover.name)
                    if cgroup.enabled:
                        cgroup.kill()
                        cgroup.remove()
                    shutil.rmtree(leftover, ignore_errors=True)

        await anyio.to_thread.run_sync(sweep)
        await anyio.to_thread.run_sync(sweep_abandoned_spare_groups)
        if self.warm_spares and bwrap_path() is not None:
            self._refill_soon()

    async def close(self) -> None:
        self._closed = True
        if self._refilling is not None:
            with contextlib.suppress(Exception):
                await self._refilling
        with self._spares_lock:
            spares, self._spares = self._spares, []
        for paths, process in spares:
            await anyio.to_thread.run_sync(self._discard_spare, paths, process)

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
            await asyncio.sleep(0.005)

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
        cgroup = self.cgroup_of(handle)
        if cgroup.enabled:
            cgroup.kill()
        processes.kill_tree(self._pids(handle))
        with contextlib.suppress(FileNotFoundError):
            paths.socket.unlink()
        processes.forget(paths.pid_file)

    async def destroy(self, handle: MachineHandle) -> None:
        await self.stop(handle)
        paths = self.paths(handle)
        cgroup = self.cgroup_of(handle)

        def remove() -> None:
            cgroup.remove()
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
        cgroup = self.cgroup_of(handle)
        if cgroup.enabled:
            return cgroup.pids()
        root = processes.recorded(self.paths(handle).pid_file)
        return processes.tree(root) if root else set()

    def cgroup_of(self, handle: MachineHandle) -> InstanceCgroup:
        """The instance's cgroups: named after it, or after the spare it took over."""
        try:
            name = (self.paths(handle).root / "cgroup").read_text().strip()
        except OSError:
            name = handle.ref
        return InstanceCgroup(name or handle.ref)

    @staticmethod
    def _last_output(paths: InstancePaths) -> str:
        with contextlib.suppress(OSError):
            lines = (paths.logs / "guest.out").read_bytes()[-2000:].decode(errors="replace")
            for line in reversed(lines.splitlines()):
                if line.strip() and not line.startswith(('{"ready"', '{"waiting"')):
                    return line.strip()
        return "no output"


def _send_config(process: subprocess.Popen[bytes], config: bytes) -> None:
    assert process.stdin is not None
    try:
        with process.stdin:
            process.stdin.write(config)
    except BrokenPipeError as exc:
        raise ProviderError("the guest daemon exited before it got its configuration") from exc
