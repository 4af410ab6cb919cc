"""The ``local`` compute provider: instances as sandboxed process trees on this host.

Each instance gets ``<data dir>/instances/<id>/``, the control plane's own directory (mode
0700, never visible inside the sandbox), holding ``disk/``: the instance's volume with
``home/`` (the agent's home and working directory, kept across stop/start) and ``logs/``.
The guest daemon is started detached from the server (its own session, not a child the
server waits on), so restarting ``gentity serve`` leaves instances running; the next server
finds them again through their cgroups or their recorded process id.

Everything under ``disk/`` is written by the instance and read here as hostile input (see
docs/security.md). The guest's socket is bound by this provider in a directory the instance
cannot see, and handed to the guest as a descriptor.

This module is the lifecycle; warm spares live in ``spares.py``, the agent log in
``logs.py``, and what is known of a guest before it answers in ``guest_process.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from functools import cache, cached_property
from pathlib import Path

import anyio.to_thread

from gentity.guest import client as guest_client
from gentity.guest.client import GuestEndpoint
from gentity.guest.logwriter import LogWriter
from gentity.guest.redact import Redactor
from gentity.providers.compute.base import (
    ComputeProvider,
    GuestLaunch,
    GuestLayout,
    MachineHandle,
    MachineSpec,
    MachineState,
    MachineStatus,
    ProviderError,
    Region,
)
from gentity.providers.compute.local import logs, network, processes, spares, uids, volumes
from gentity.providers.compute.local.cgroups import (
    InstanceCgroup,
    spare_prefix,
    sweep_abandoned_spare_groups,
)
from gentity.providers.compute.local.guest_process import (
    GUEST_READY_TIMEOUT,
    GUEST_STOP_GRACE,
    Booted,
    SandboxSetupRaced,
    bind_socket,
    describe_exit,
    end_waiting_guest,
    exit_words,
    log_guest_output,
    send_bootstrap,
    wait_for_waiting,
)
from gentity.providers.compute.local.install import InstallSandbox, bin_dir, ensure_installed
from gentity.providers.compute.local.ownership import Host
from gentity.providers.compute.local.sandbox import (
    DEFAULT_PATH,
    SANDBOX_HOME,
    InstancePaths,
    SandboxSpec,
    bwrap_path,
    compile_guest,
    guest_command,
    guest_environment,
    sandbox_argv,
    setpriv_path,
)
from gentity.providers.compute.local.seccomp import (
    SeccompUnavailable,
    filter_program,
    open_filter_fd,
)
from gentity.providers.compute.local.settings import LocalSettings
from gentity.providers.compute.local.transitions import InFlight, shows
from gentity.settings import Settings

log = logging.getLogger(__name__)

# Joins the instance's cgroups *before* exec'ing the sandbox, so no process of the instance
# ever runs outside them (writing the pid afterwards would race with the first fork).
_JOIN_CGROUPS = (
    'IFS=:; for f in $GENTITY_CGROUP_PROCS; do echo $$ > "$f" || exit 97; done; '
    'unset GENTITY_CGROUP_PROCS; exec "$@"'
)


SANDBOX_ATTEMPTS = 3
"""How many times a sandbox is set up when host mounts keep changing under bubblewrap."""

GUEST_GONE_GRACE = 2.0
"""How long a sandbox whose guest daemon ended is given to end by itself (see ``_seen``)."""

LOCAL_REGION = "local"
"""The one region of the local provider: this host."""


class LocalProvider(ComputeProvider):
    """Runs every instance on this host. See the module docstring for the layout."""

    name = "local"

    def __init__(
        self,
        data_dir: Path,
        *,
        warm_spares: int = 0,
        uid_range: tuple[int, int] = (1_000_000, 1_999_999),
        key_dir: Path | None = None,
        host_id: str | None = None,
    ) -> None:
        self.data_dir = data_dir
        self._host_id = host_id
        self.in_flight = InFlight()
        self.uid_range = uid_range
        # The directory of a key file kept outside the data directory: hidden like it.
        self.key_dir = key_dir
        self._spares = spares.WarmSpares(warm_spares, self._start_spare, self._discard)
        self._warned_unlimited: set[str] = set()
        # How each guest this process spawned ended, by its host pid: `status` names the
        # guest's exit ("killed by signal KILL") instead of just saying that nothing runs.
        self._exits: dict[int, int] = {}
        # Since when each instance's guest has been seen gone while the rest of it ran on.
        self._guest_gone_at: dict[str, float] = {}
        self.instances_dir = data_dir / "instances"
        self.agents_dir = data_dir / "agents"
        # Unix socket paths are limited to 107 bytes, and data directories can be deep: the
        # sockets live in a short per-data-directory runtime directory instead.
        digest = hashlib.sha256(str(data_dir).encode()).hexdigest()[:12]
        self.runtime_dir = Path(f"/tmp/gentity-{os.getuid()}/{digest}")  # noqa: S108

    @classmethod
    def from_settings(cls, settings: Settings, local: LocalSettings) -> LocalProvider:
        key_file = settings.resolved_secret_key_file
        return cls(
            settings.data_dir,
            warm_spares=local.warm_spares,
            uid_range=uids.parse_range(local.uid_range),
            key_dir=None if key_file.is_relative_to(settings.data_dir) else key_file.parent,
            host_id=local.host_id,
        )

    @property
    def warm_spares(self) -> int:
        return self._spares.count

    @cached_property
    def host(self) -> Host:
        return Host.of(self.data_dir, self._host_id)

    def regions(self) -> list[Region]:
        # Every machine runs on this host: one region, named after it for the picker.
        return [Region(code=LOCAL_REGION, label=f"This host ({socket.gethostname()})")]

    def unreachable(self, handle: MachineHandle) -> str | None:
        return self.host.unreachable(handle.ref, handle.data)

    def paths(self, handle: MachineHandle) -> InstancePaths:
        return InstancePaths.under(self.instances_dir, handle.ref, self.runtime_dir)

    # --- what this host can enforce -------------------------------------------------------

    @property
    def per_instance_uids(self) -> bool:
        """Root can run each instance as a uid of its own; anyone else runs them as itself."""
        return os.geteuid() == 0 and bwrap_path() is not None and setpriv_path() is not None

    @property
    def own_network(self) -> bool:
        return bwrap_path() is not None and network.slirp4netns_path() is not None

    def isolation_warnings(self) -> list[str]:
        warnings = []
        if bwrap_path() is None:
            warnings.append("bubblewrap missing: local instances run without a sandbox")
        elif not self.per_instance_uids:
            warnings.append("not root: every local instance runs as the server's own uid")
        if network.slirp4netns_path() is None:
            warnings.append("slirp4netns missing: local instances share the host's network")
        if _seccomp_problem() is not None:
            warnings.append(f"no seccomp filter for local instances: {_seccomp_problem()}")
        if volumes.quota_support() is not None:
            warnings.append(f"volume sizes are not enforced: {volumes.quota_support()}")
        if not InstanceCgroup("probe").enabled:
            warnings.append("no writable cgroups: local instances have no resource limits")
        return warnings

    # --- lifecycle ------------------------------------------------------------------------

    async def create(self, spec: MachineSpec) -> MachineHandle:
        handle = MachineHandle(
            ref=spec.instance_id,
            data={
                "cpus": spec.cpus,
                "memoryMb": spec.memory_mb,
                "volumeGb": spec.volume_gb,
                "hostname": spec.subdomain,
                **self.host.record(),
            },
        )
        # The volume is made at the first start, unless a warm spare brings its own.
        await anyio.to_thread.run_sync(self._make_root, self.paths(handle))
        return handle

    def _make_root(self, paths: InstancePaths) -> None:
        self._ensure_runtime_dir()
        self.instances_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        for directory in (paths.root, paths.run):
            directory.mkdir(exist_ok=True, mode=0o700)

    def _make_directories(self, paths: InstancePaths, volume_gb: int) -> None:
        """The instance's directories and its volume (idempotent)."""
        self._make_root(paths)
        uid = self._uid_of(paths)
        owner = os.getuid() if uid is None else uid
        unlimited = volumes.create(paths.root, volume_gb, owner, owner)
        if unlimited is not None and paths.root.name not in self._warned_unlimited:
            self._warned_unlimited.add(paths.root.name)
            log.warning("instance %s: %s", paths.root.name, unlimited)
        for directory in (paths.volume, paths.logs):
            directory.mkdir(exist_ok=True, mode=0o700)
            os.chown(directory, owner, owner)

    def _uid_of(self, paths: InstancePaths) -> int | None:
        """The instance's host uid: recorded in its directory, claimed on first use."""
        if not self.per_instance_uids:
            return None
        with contextlib.suppress(OSError, ValueError):
            return int(paths.uid_file.read_text())
        uid = uids.claim(paths.root, self.uid_range)
        paths.uid_file.write_text(f"{uid}\n")
        return uid

    def _ensure_runtime_dir(self) -> None:
        # /tmp is shared with every user of the host: refuse a directory someone else made
        # (or a symlink) where our sockets are about to go.
        for directory in (self.runtime_dir.parent, self.runtime_dir):
            directory.mkdir(mode=0o700, exist_ok=True)
            info = directory.lstat()
            if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
                raise ProviderError("the runtime directory is not this server's")
            if stat.S_IMODE(info.st_mode) & 0o077:
                directory.chmod(0o700)

    @shows(MachineState.STARTING)
    async def start(self, handle: MachineHandle, launch: GuestLaunch) -> None:
        if (await self.status(handle)).state is MachineState.RUNNING:
            return
        paths = self.paths(handle)
        fresh = await anyio.to_thread.run_sync(self._prepare_start, paths)
        # The sandbox boots (or a spare is taken over), then the agent installs on the host
        # while its guest waits for the bootstrap; start returns with the install in place,
        # before the control plane configures the guest to run the agent.
        booted = await anyio.to_thread.run_sync(self._boot, handle, paths, fresh)
        if booted.spare:
            # Its successor starts now rather than once this instance runs: the next create
            # is then more likely to find it ready (or waits less for it, see spares.py).
            self._spares.refill_soon()
        if launch.install is not None:
            redact = Redactor(launch.secret_values())
            try:
                with LogWriter(paths.log_file, redact=redact) as writer:
                    await ensure_installed(
                        self.agents_dir,
                        launch.agent,
                        launch.install,
                        writer,
                        InstallSandbox(
                            self.data_dir,
                            key_dir=self.key_dir,
                            uid_range=self.uid_range if self.per_instance_uids else None,
                        ),
                    )
            except BaseException:
                await anyio.to_thread.run_sync(end_waiting_guest, booted.process)
                raise
        # No secret in here: the guest learns only the secret's hash, and gets the agent's
        # config and keys from the control plane over its socket (see guest_config).
        bootstrap: dict[str, object] = {
            "listen": f"fd:{booted.listen_fd}",
            "secretSha256": hashlib.sha256(launch.secret.encode()).hexdigest(),
            "hostname": str(handle.data.get("hostname", handle.ref))[:63],
            "childCgroupFd": booted.cgroup_fd,
        }
        try:
            await anyio.to_thread.run_sync(send_bootstrap, booted, bootstrap)
        except ProviderError:
            if not booted.spare:
                raise
            # A warm spare that died while it waited must not fail the start: boot cold.
            log.warning("instance %s: its warm spare had exited; starting cold", handle.ref)
            await anyio.to_thread.run_sync(self._stop_sync, handle)
            booted = await anyio.to_thread.run_sync(self._boot, handle, paths, False)
            bootstrap.update(listen=f"fd:{booted.listen_fd}", childCgroupFd=booted.cgroup_fd)
            await anyio.to_thread.run_sync(send_bootstrap, booted, bootstrap)
        await self._wait_until_ready(handle, paths, launch.secret, booted.process)
        self._spares.refill_soon()

    def guest_layout(self, handle: MachineHandle, launch: GuestLaunch) -> GuestLayout:
        # The agent was installed on the host before boot (start): its cache is mounted
        # read-only into the sandbox, so the guest installs nothing itself.
        extra_path = (
            []
            if launch.install is None
            else [str(bin_dir(self.agents_dir, launch.agent, launch.install))]
        )
        view = self.paths(handle).view(bwrap_path() is not None)
        env = guest_environment(view.home, extra_path)
        return GuestLayout(workdir=view.home, log_file=view.log_file, env=env)

    def _prepare_start(self, paths: InstancePaths) -> bool:
        """Mount what a start needs; whether the instance never started (has no volume)."""
        if not paths.root.is_dir():
            raise ProviderError("the instance's volume is missing")
        moved = _move_legacy_layout(paths)
        if not paths.disk.exists():
            return True
        volumes.ensure_mounted(paths.root)  # after a reboot, the mount is gone
        if not paths.volume.is_dir():
            raise ProviderError("the instance's volume is missing")
        uid = self._uid_of(paths)
        if moved and uid is not None:
            _chown_tree(paths.disk, uid)
        return False

    def _boot(self, handle: MachineHandle, paths: InstancePaths, fresh: bool) -> Booted:
        """A sandboxed guest waiting for its bootstrap: a warm spare when one fits, else new.

        The log file exists and belongs to the instance afterwards."""
        cpus, memory_mb = int(handle.data["cpus"]), int(handle.data["memoryMb"])
        volume_gb = int(handle.data.get("volumeGb", spares.SPARE_VOLUME_GB))
        hostname = str(handle.data.get("hostname", handle.ref))[:63]
        spare = self._spares.take(volume_gb) if fresh else None
        if spare is not None:
            spares.take_over(
                spare, paths, volume_gb=volume_gb, cpus=cpus, memory_mb=memory_mb, hostname=hostname
            )
            booted = spare
        else:
            if fresh:
                self._make_directories(paths, volume_gb)
            booted = self._spawn_retrying(
                handle.ref, paths, cpus=cpus, memory_mb=memory_mb, hostname=hostname
            )
        logs.give_log_file(paths, os.getuid() if booted.uid is None else booted.uid)
        return booted

    def _spawn(
        self, ref: str, paths: InstancePaths, *, cpus: int, memory_mb: int, hostname: str
    ) -> Booted:
        """Start the sandbox and the guest in it, and return once the guest waits for its
        bootstrap. On failure the sandbox's processes are gone; its directories stay."""
        compile_guest()
        cgroup = InstanceCgroup(ref)
        if cgroup.enabled:
            cgroup.create(cpus=cpus, memory_mb=memory_mb)
        (paths.root / "cgroup").write_text(ref)
        self.agents_dir.mkdir(parents=True, exist_ok=True)
        uid = self._uid_of(paths)
        bwrap = bwrap_path()
        own_network = self.own_network
        # Descriptors for the child only; ours are closed as soon as it has them.
        listen_fd = bind_socket(paths.socket)
        cgroup_fd = cgroup.open_children_procs()
        handed = [listen_fd] + ([cgroup_fd] if cgroup_fd is not None else [])
        info_read: int | None = None
        exit_read: int | None = None
        try:
            if bwrap:
                seccomp_fd = _seccomp_fd()
                info_read, info_write = os.pipe()
                handed += [info_write] + ([seccomp_fd] if seccomp_fd is not None else [])
                if own_network:
                    # The sandbox holds the write end: slirp4netns exits when it is gone.
                    exit_read, exit_write = os.pipe()
                    handed.append(exit_write)
                spec = SandboxSpec(
                    paths=paths,
                    data_dir=self.data_dir,
                    hostname=hostname,
                    env=guest_environment(SANDBOX_HOME, []),
                    command=guest_command(),
                    readonly_paths=[self.agents_dir],
                    hidden_dirs=[self.key_dir] if self.key_dir else [],
                    uid=uid,
                    seccomp_fd=seccomp_fd,
                    info_fd=info_write,
                    own_network=own_network,
                    resolv_conf=network.resolv_conf(self.data_dir) if own_network else None,
                )
                argv, spawn_env = sandbox_argv(bwrap, spec), {"PATH": DEFAULT_PATH}
            else:
                argv, spawn_env = guest_command(), guest_environment(str(paths.volume), [])
            wrap: list[str] = []
            if cgroup.enabled:
                wrap = ["/bin/sh", "-c", _JOIN_CGROUPS, "sh"]
                spawn_env = {**spawn_env, "GENTITY_CGROUP_PROCS": ":".join(cgroup.procs_files())}
            with paths.guest_output.open("ab") as out:
                # What this boot prints starts here (the file keeps earlier boots' output).
                output_start = out.tell()
                process = subprocess.Popen(
                    [*wrap, *argv],
                    stdin=subprocess.PIPE,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=spawn_env,
                    cwd=paths.root,
                    start_new_session=True,  # no signal from the server's terminal reaches it
                    pass_fds=handed,
                )
        finally:
            for fd in handed:
                os.close(fd)
        processes.record(paths.pid_file, process.pid)
        # Reap it when it ends while this server runs; after a server restart, init does.
        threading.Thread(
            target=self._reap, args=(process,), name=f"reap-{ref}", daemon=True
        ).start()
        booted = Booted(paths, process, listen_fd, cgroup_fd, uid=uid)
        try:
            if info_read is not None:
                booted.sandbox_pid = network.read_sandbox_pid(info_read)
            # slirp4netns brings the sandbox's loopback interface up; bubblewrap, when it finds
            # lo up before it has added lo's address itself, gives up ("Failed RTM_NEWADDR").
            # So the network is attached only once the sandbox is complete, which the guest
            # says by waiting for its bootstrap.
            wait_for_waiting(process, paths.guest_output, output_start)
            if exit_read is not None and booted.sandbox_pid is not None:
                output = paths.root / "network.out"
                network.attach(booted.sandbox_pid, exit_read, output, wrap, spawn_env)
        except (network.NetworkError, ProviderError) as exc:
            raced = isinstance(exc, SandboxSetupRaced)  # set up again: not worth a warning
            log_guest_output(ref, paths, level=logging.INFO if raced else logging.WARNING)
            self._end_sandbox(booted)
            if raced:
                raise
            raise ProviderError(str(exc)) from None
        finally:
            for leftover in (info_read, exit_read):
                if leftover is not None:
                    os.close(leftover)
        return booted

    def _spawn_retrying(
        self, ref: str, paths: InstancePaths, *, cpus: int, memory_mb: int, hostname: str
    ) -> Booted:
        """:meth:`_spawn`, set up again when a host mount changed under bubblewrap (see
        SandboxSetupRaced): volumes come and go as other instances stop and start."""
        for attempt in range(1, SANDBOX_ATTEMPTS + 1):
            try:
                return self._spawn(ref, paths, cpus=cpus, memory_mb=memory_mb, hostname=hostname)
            except SandboxSetupRaced:
                if attempt == SANDBOX_ATTEMPTS:
                    raise
                log.info("instance %s: a host mount changed as its sandbox was set up; again", ref)
        raise AssertionError("unreachable")

    def _reap(self, process: subprocess.Popen[bytes]) -> None:
        self._exits[process.pid] = process.wait()

    # --- warm spares (see spares.py) ------------------------------------------------------

    def _start_spare(self) -> Booted:
        ref = spare_prefix(self.data_dir) + secrets.token_hex(6)
        paths = InstancePaths.under(self.instances_dir, ref, self.runtime_dir)
        self._make_directories(paths, spares.SPARE_VOLUME_GB)
        # Spares get the smallest limits until an instance takes one over.
        try:
            return self._spawn_retrying(ref, paths, cpus=1, memory_mb=512, hostname=ref[:63])
        except ProviderError:
            self._remove(paths, InstanceCgroup(ref))
            raise

    def _discard(self, booted: Booted) -> None:
        """Stop a sandbox that never became an instance, and remove everything it had."""
        self._end_sandbox(booted)
        self._remove(booted.paths, InstanceCgroup(booted.paths.root.name))

    @staticmethod
    def _end_sandbox(booted: Booted) -> None:
        """Stop every process of a sandbox whose guest never got its bootstrap."""
        with contextlib.suppress(OSError):
            if booted.process.stdin:
                booted.process.stdin.close()  # end-of-file: the waiting guest exits by itself
        cgroup = InstanceCgroup(booted.paths.root.name)
        if cgroup.enabled:
            cgroup.kill()
        processes.kill_tree(processes.tree(booted.process.pid))

    def _remove(self, paths: InstancePaths, cgroup: InstanceCgroup) -> None:
        """Everything the instance had on this host: cgroups, volume, directories, its uid."""
        cgroup.remove()
        volumes.destroy(paths.root)
        uid = None
        with contextlib.suppress(OSError, ValueError):
            uid = int(paths.uid_file.read_text())
        shutil.rmtree(paths.root, ignore_errors=True)
        shutil.rmtree(paths.run, ignore_errors=True)
        if paths.root.exists():
            raise ProviderError("could not remove the instance's files")
        if uid is not None:
            uids.release(uid, paths.root)

    async def adopt(self) -> None:
        await anyio.to_thread.run_sync(compile_guest)
        await anyio.to_thread.run_sync(spares.sweep_leftovers, self.instances_dir, self.runtime_dir)
        await anyio.to_thread.run_sync(sweep_abandoned_spare_groups, spare_prefix(self.data_dir))
        if bwrap_path() is not None:
            self._spares.refill_soon()

    async def close(self) -> None:
        await self._spares.close()
        if self.instances_dir.is_dir():
            await anyio.to_thread.run_sync(volumes.release_parent, self.instances_dir)

    async def _wait_until_ready(
        self,
        handle: MachineHandle,
        paths: InstancePaths,
        secret: str,
        process: subprocess.Popen[bytes],
    ) -> None:
        deadline = time.monotonic() + GUEST_READY_TIMEOUT
        while True:
            with contextlib.suppress(guest_client.GuestError):
                await guest_client.health(self.guest_endpoint(handle), secret, timeout=2)
                return
            if process.poll() is not None:
                raise ProviderError(f"the guest daemon {describe_exit(process)}")
            if time.monotonic() > deadline:
                await self.stop(handle)
                raise ProviderError("the guest daemon did not answer within 20 s")
            await asyncio.sleep(0.005)

    @shows(MachineState.STOPPING)
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
        # The grace is for the guest daemon to stop the agent; once it is gone (or when it
        # was dead already), what is left of the sandbox is killed without waiting for it.
        while (
            any(processes.alive(p) and processes.is_guest_daemon(p) for p in guests)
            and time.monotonic() < deadline
        ):
            time.sleep(0.02)
        cgroup = self.cgroup_of(handle)
        if cgroup.enabled:
            cgroup.kill()
        processes.kill_tree(self._pids(handle))
        with contextlib.suppress(FileNotFoundError):
            paths.socket.unlink()
        processes.forget(paths.pid_file)

    @shows(MachineState.DESTROYING)
    async def destroy(self, handle: MachineHandle) -> None:
        await self.stop(handle)
        await anyio.to_thread.run_sync(self._remove, self.paths(handle), self.cgroup_of(handle))

    async def destroy_unrecorded(self, instance_id: str) -> None:
        # Everything create() makes is named after the instance (its directory, socket and
        # cgroup, or the spare's cgroup recorded in its directory): the id is a whole handle.
        await self.destroy(MachineHandle(ref=instance_id))

    async def status(self, handle: MachineHandle) -> MachineStatus:
        return self.in_flight.overlay(handle.ref, self._seen(handle))

    async def statuses(
        self, handles: Sequence[MachineHandle]
    ) -> list[MachineStatus | ProviderError]:
        """From this host's process table, read in one go off the event loop: each process is
        looked at once however many instances are asked about."""
        seen = await anyio.to_thread.run_sync(self._seen_all, list(handles))
        return [self.in_flight.overlay(h.ref, s) for h, s in zip(handles, seen, strict=True)]

    def _seen_all(self, handles: list[MachineHandle]) -> list[MachineStatus]:
        daemons: dict[int, bool] = {}

        def is_guest_daemon(pid: int) -> bool:
            known = daemons.get(pid)
            if known is None:
                known = daemons[pid] = processes.is_guest_daemon(pid)
            return known

        return [self._seen(handle, is_guest_daemon) for handle in handles]

    def _seen(
        self,
        handle: MachineHandle,
        is_guest_daemon: Callable[[int], bool] = processes.is_guest_daemon,
    ) -> MachineStatus:
        paths = self.paths(handle)
        if not paths.root.exists():
            return MachineStatus(MachineState.MISSING)
        pids = self._pids(handle)
        if any(is_guest_daemon(pid) for pid in pids):
            self._guest_gone_at.pop(handle.ref, None)
            return MachineStatus(MachineState.RUNNING)
        if pids:
            gone_at = self._guest_gone_at.setdefault(handle.ref, time.monotonic())
            if time.monotonic() - gone_at < GUEST_GONE_GRACE:
                # The guest just ended and the rest of its sandbox (the agent on its hang-up,
                # bubblewrap) ends after it: look again in a moment, when how it ended is known.
                return MachineStatus(MachineState.STOPPING, "its guest daemon has exited")
            # Something of the instance outlives its guest (a process it left behind): the
            # machine is as good as stopped, and stopping it removes the rest.
            return MachineStatus(MachineState.STOPPED, "the guest daemon is not running")
        self._guest_gone_at.pop(handle.ref, None)
        log_guest_output(handle.ref, paths)
        code = self._exits.get(processes.recorded_pid(paths.pid_file) or 0)
        if code is None:
            # Spawned by an earlier server process, or stopped on purpose: how it ended is unknown.
            return MachineStatus(MachineState.STOPPED, "the guest daemon is not running")
        return MachineStatus(MachineState.STOPPED, f"the guest daemon {exit_words(code)}")

    def guest_endpoint(self, handle: MachineHandle) -> GuestEndpoint:
        return GuestEndpoint(f"unix:{self.paths(handle).socket}")

    async def tail_stopped(self, handle: MachineHandle, lines: int) -> list[dict[str, str]]:
        return await logs.last_records(self.paths(handle).log_file, lines)

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


@cache
def _seccomp_problem() -> str | None:
    """Why no seccomp filter can be built here (libseccomp missing), or None."""
    try:
        filter_program()
    except SeccompUnavailable as exc:
        log.warning("local instances run WITHOUT a seccomp filter: %s", exc)
        return str(exc)
    return None


def _seccomp_fd() -> int | None:
    """The compiled filter for bubblewrap's ``--seccomp``, or None when it cannot be built."""
    return None if _seccomp_problem() is not None else open_filter_fd()


def _move_legacy_layout(paths: InstancePaths) -> bool:
    """Instances made before ``disk/`` kept ``volume/`` and ``logs/`` in the root: move them
    in once (same filesystem: two renames), so they start like any other."""
    legacy = paths.root / "volume"
    if paths.disk.exists() or not legacy.is_dir():
        return False
    paths.disk.mkdir(mode=0o755)
    os.rename(legacy, paths.volume)
    if (paths.root / "logs").is_dir():
        os.rename(paths.root / "logs", paths.logs)
    return True


def _chown_tree(top: Path, uid: int) -> None:
    """Hand a volume that the server's own uid owned to the instance's uid (never following
    a link: the tree was written by the instance)."""
    for directory, dirnames, filenames in os.walk(top):
        os.lchown(directory, uid, uid)
        for name in dirnames + filenames:
            os.lchown(os.path.join(directory, name), uid, uid)
