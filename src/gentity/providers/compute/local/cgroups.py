"""Per-instance control groups: resource limits (cgroup v1) and a reliable kill (cgroup v2).

Hosts differ. This one may have writable v1 controllers for ``memory``, ``cpu`` and ``pids``,
and a v2 hierarchy whose only use to us is ``cgroup.kill`` and ``cgroup.events``. Whatever is
missing is detected at run time and logged once; instances still run without it.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import signal
import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path

log = logging.getLogger(__name__)

ROOT = Path("/sys/fs/cgroup")
GROUP = "gentity"
# v1 controllers we use, and the v2 mount (named "unified" on hybrid hosts, the root on pure v2).
V1_CONTROLLERS = ("memory", "cpu", "pids")
CPU_PERIOD_US = 100_000
PIDS_MAX = 4096
# The guest's children (agent, shells, installs) live in a group below the instance's with a
# lower process limit, so a fork bomb leaves the guest room to keep serving and clean up.
CHILDREN = "children"
CHILDREN_PIDS_MAX = PIDS_MAX - 96


@dataclass(frozen=True)
class Capabilities:
    v1: tuple[str, ...]
    """v1 controllers we can create groups in."""
    v2: Path | None
    """Where we can create v2 groups with ``cgroup.kill``, if anywhere."""


def _writable_dir(path: Path) -> bool:
    probe = path / GROUP / f".probe-{os.getpid()}"
    try:
        probe.mkdir(parents=True, exist_ok=True)
        probe.rmdir()
    except OSError:
        return False
    return True


@cache
def capabilities() -> Capabilities:
    v1 = tuple(
        c for c in V1_CONTROLLERS if (ROOT / c / "tasks").exists() and _writable_dir(ROOT / c)
    )
    v2: Path | None = None
    for candidate in (ROOT / "unified", ROOT):
        if (candidate / "cgroup.controllers").exists() and _writable_dir(candidate):
            v2 = candidate
            break
    missing = [c for c in V1_CONTROLLERS if c not in v1]
    if missing:
        log.warning(
            "cgroup v1 controllers not writable here: %s; those limits are not enforced",
            ", ".join(missing),
        )
    if v2 is None:
        log.warning("no writable cgroup v2 hierarchy; destroy falls back to signalling processes")
    return Capabilities(v1=v1, v2=v2)


class InstanceCgroup:
    """The cgroups of one instance, named ``gentity/<instance id>`` in every hierarchy used."""

    def __init__(self, instance_id: str, caps: Capabilities | None = None) -> None:
        self.caps = caps or capabilities()
        self.v1 = {c: ROOT / c / GROUP / instance_id for c in self.caps.v1}
        self.v2 = self.caps.v2 / GROUP / instance_id if self.caps.v2 else None

    @property
    def enabled(self) -> bool:
        return bool(self.v1) or self.v2 is not None

    def create(self, *, cpus: int, memory_mb: int) -> None:
        """Make the groups and set the limits (idempotent)."""
        for path in [*self.v1.values(), *([self.v2] if self.v2 else [])]:
            path.mkdir(parents=True, exist_ok=True)
        if "memory" in self.v1:
            _write(self.v1["memory"] / "memory.limit_in_bytes", str(memory_mb * 1024 * 1024))
        if "cpu" in self.v1:
            _write(self.v1["cpu"] / "cpu.cfs_period_us", str(CPU_PERIOD_US))
            _write(self.v1["cpu"] / "cpu.cfs_quota_us", str(cpus * CPU_PERIOD_US))
        if "pids" in self.v1:
            _write(self.v1["pids"] / "pids.max", str(PIDS_MAX))
            children = self.v1["pids"] / CHILDREN
            children.mkdir(exist_ok=True)
            _write(children / "pids.max", str(CHILDREN_PIDS_MAX))

    def open_children_procs(self) -> int | None:
        """An open ``cgroup.procs`` of the children's group, for the guest to move its
        children into (the instance cannot open it itself: its cgroups are hidden)."""
        if "pids" not in self.v1:
            return None
        try:
            return os.open(self.v1["pids"] / CHILDREN / "cgroup.procs", os.O_WRONLY)
        except OSError:
            return None

    def _all_groups(self) -> list[Path]:
        """Every group of the instance, children before their parents."""
        groups = [*self.v1.values(), *([self.v2] if self.v2 else [])]
        return [p / CHILDREN for p in groups] + groups

    def procs_files(self) -> list[str]:
        """The ``cgroup.procs`` files a new process must write its pid into to join."""
        files = [str(p / "cgroup.procs") for p in self.v1.values()]
        if self.v2:
            files.append(str(self.v2 / "cgroup.procs"))
        return files

    def pids(self) -> set[int]:
        """Every process in the instance's groups (empty when nothing runs)."""
        found: set[int] = set()
        for path in self._all_groups():
            with contextlib.suppress(OSError):
                found.update(int(x) for x in (path / "cgroup.procs").read_text().split())
        return found

    def kill(self, timeout: float = 5.0) -> None:
        """SIGKILL everything in the groups and wait until they are empty."""
        deadline = time.monotonic() + timeout
        while pids := self.pids():
            if self.v2 and (self.v2 / "cgroup.kill").exists():
                with contextlib.suppress(OSError):
                    _write(self.v2 / "cgroup.kill", "1")
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            if time.monotonic() > deadline:
                log.warning("processes still alive in cgroup after kill: %s", sorted(pids))
                return
            time.sleep(0.02)

    def remove(self, timeout: float = 5.0) -> None:
        """Remove the groups, killing again whatever joined them since the last kill: a start
        cancelled by a destroy may have a process that joins its group a moment later."""
        deadline = time.monotonic() + timeout
        for path in self._all_groups():
            while True:
                try:
                    path.rmdir()
                except FileNotFoundError:
                    pass
                except OSError as exc:
                    if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                        raise
                    self.kill(timeout=max(0.1, deadline - time.monotonic()))
                    time.sleep(0.02)
                    continue
                break


def _write(path: Path, value: str) -> None:
    path.write_text(value)


def spare_prefix(data_dir: Path) -> str:
    """How the names of a data directory's warm spares begin.

    The cgroup hierarchy is shared by every server on the host: the digest of the data
    directory in each spare's name lets a server's sweep tell its own groups from theirs.
    """
    return f".spare-{hashlib.sha256(str(data_dir).encode()).hexdigest()[:12]}-"


def sweep_abandoned_spare_groups(prefix: str, min_age_seconds: float = 60.0) -> None:
    """Remove this data directory's empty spare groups (named ``prefix…``, see
    :func:`spare_prefix`) left by a server that was killed before it could.

    Only empty groups go (rmdir refuses others), and only old ones, so a spare that a server
    on this data directory is starting right now is never touched.
    """
    caps = capabilities()
    roots = [ROOT / c / GROUP for c in caps.v1] + ([caps.v2 / GROUP] if caps.v2 else [])
    now = time.time()
    for root in roots:
        with contextlib.suppress(OSError):
            for group in root.glob(f"{prefix}*"):
                with contextlib.suppress(OSError):
                    if group.is_dir() and now - group.stat().st_mtime > min_age_seconds:
                        with contextlib.suppress(FileNotFoundError):
                            (group / CHILDREN).rmdir()
                        group.rmdir()
