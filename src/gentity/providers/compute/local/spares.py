"""Warm spares: sandboxes started ahead of need, for new instances to take over.

Most of a cold start is the guest's interpreter starting and importing. A spare is a
sandbox whose guest has done that and waits for its bootstrap; a new instance takes one over
by renaming the spare's directories and cgroups to its own. Only a brand-new instance can
(its volume is empty, like the spare's); later starts boot cold. A spare whose server goes
away reads end-of-file instead of a bootstrap, and exits.

A new instance that finds no spare ready, while one is being started that no other start is
waiting for, waits for that one rather than booting a sandbox of its own beside it: the spare
started earlier, so it is ready sooner than a cold boot begun now, and the host does the work
of one boot instead of two (creates in quick succession otherwise boot cold, on a host busy
booting the spare they just missed).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import anyio.to_thread

from gentity.providers.compute.base import ProviderError
from gentity.providers.compute.local import uids, volumes
from gentity.providers.compute.local.cgroups import InstanceCgroup
from gentity.providers.compute.local.guest_process import Booted
from gentity.providers.compute.local.sandbox import InstancePaths, bwrap_path

log = logging.getLogger(__name__)

# A warm spare's volume: the smallest in the catalog, grown when an instance takes it over.
SPARE_VOLUME_GB = 1
PREFIX = ".spare-"
# How long a new instance waits for a spare being started before it boots cold after all (a
# spare's boot normally takes a fraction of a second; this bounds a hung one).
SPARE_WAIT_SECONDS = 5.0


class WarmSpares:
    """Up to ``count`` spares, started in a worker thread by ``start_one`` and stopped (with
    everything they had) by ``discard``."""

    def __init__(
        self,
        count: int,
        start_one: Callable[[], Booted],
        discard: Callable[[Booted], None],
    ) -> None:
        self.count = count
        self._start_one = start_one
        self._discard = discard
        self._spares: list[Booted] = []
        self._lock = threading.Lock()
        # Notified (under the lock) when a spare is added or a start fails, and on close.
        self._changed = threading.Condition(self._lock)
        self._starting = 0
        """Spares being started right now."""
        self._waiting = 0
        """Starts waiting for one of those (each spare being started serves one of them)."""
        self._refilling: asyncio.Future[None] | None = None
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def take(self, volume_gb: int, wait: float = SPARE_WAIT_SECONDS) -> Booted | None:
        """A spare whose guest still waits, if one fits; dead ones met on the way go.

        With none ready, waits up to ``wait`` seconds for one being started that no other
        caller waits for already (see the module docstring). Blocks: call it from a worker
        thread."""
        if bwrap_path() is None:
            return None
        # A spare's volume is the smallest; a larger one needs growing while it is mounted.
        if volume_gb != SPARE_VOLUME_GB and not volumes.can_grow_online():
            return None
        deadline = time.monotonic() + wait
        with self._changed:
            while True:
                while self._spares:
                    spare = self._spares.pop()
                    if spare.process.poll() is None:
                        return spare
                    self._discard(spare)
                left = deadline - time.monotonic()
                if self._closed or self._starting <= self._waiting or left <= 0:
                    return None
                self._waiting += 1
                try:
                    self._changed.wait(left)
                finally:
                    self._waiting -= 1

    def refill_soon(self) -> None:
        """Start what is missing in the background (one refill at a time)."""
        if self.count and (self._refilling is None or self._refilling.done()):
            self._refilling = asyncio.get_running_loop().create_task(
                anyio.to_thread.run_sync(self._refill)
            )

    def _refill(self) -> None:
        while True:
            with self._changed:
                if len(self._spares) >= self.count or self._closed:
                    return
                self._starting += 1
            spare = None
            try:
                spare = self._start_one()
            except ProviderError as exc:
                log.warning("a warm spare failed to start: %s", exc)
                return
            finally:
                with self._changed:
                    self._starting -= 1
                    if spare is not None:
                        self._spares.append(spare)
                    self._changed.notify_all()

    async def close(self) -> None:
        """Stop refilling and discard every spare."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()
        if self._refilling is not None:
            with contextlib.suppress(Exception):
                await self._refilling
        with self._lock:
            spares, self._spares = self._spares, []
        for spare in spares:
            await anyio.to_thread.run_sync(self._discard, spare)


def take_over(
    spare: Booted, paths: InstancePaths, *, volume_gb: int, cpus: int, memory_mb: int, hostname: str
) -> None:
    """The spare's directories become the instance's at ``paths``; its processes keep
    running."""
    shutil.rmtree(paths.root)
    if spare.uid is not None:
        uids.move(spare.uid, paths.root)
    os.rename(spare.paths.root, paths.root)
    paths.run.rmdir()
    os.rename(spare.paths.run, paths.run)
    volumes.resize(paths.root, volume_gb)
    # cgroup v2 directories cannot be renamed: the instance keeps the spare's groups.
    InstanceCgroup(spare.paths.root.name).create(cpus=cpus, memory_mb=memory_mb)
    if spare.sandbox_pid is not None:
        _set_hostname(spare.sandbox_pid, hostname)
    spare.paths = paths
    spare.spare = True


def sweep_leftovers(*roots: Path) -> None:
    """Remove what spares of a previous server left (their guests have exited)."""
    for root in roots:
        for leftover in root.glob(f"{PREFIX}*") if root.is_dir() else []:
            cgroup = InstanceCgroup(leftover.name)
            if cgroup.enabled:
                cgroup.kill()
                cgroup.remove()
            shutil.rmtree(leftover, ignore_errors=True)


def _set_hostname(sandbox_pid: int, hostname: str) -> None:
    """Name a warm spare's UTS namespace after the instance that took it over.

    Done from outside: inside, nothing holds the capability to.
    """
    nsenter, tool = shutil.which("nsenter"), shutil.which("hostname")
    if nsenter is None or tool is None:
        return
    subprocess.run(
        [nsenter, f"--target={sandbox_pid}", "--uts", "--", tool, "--", hostname],
        capture_output=True,
        timeout=5,
        check=False,
    )
