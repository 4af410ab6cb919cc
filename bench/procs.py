"""Reading processes through ``/proc`` (Linux): command lines, parents, resident memory."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from bench.server import instance_cgroups


def cmdline(pid: int) -> list[str]:
    with contextlib.suppress(OSError):
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        return [part.decode(errors="replace") for part in raw.split(b"\0") if part]
    return []


def parent(pid: int) -> int:
    with contextlib.suppress(OSError, IndexError, ValueError):
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    return 0


def rss_kb(pid: int) -> int:
    """VmRSS in KiB (0 if the process is gone)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def all_pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def children(pid: int) -> list[int]:
    return [p for p in all_pids() if parent(p) == pid]


def _is_guest(argv: list[str]) -> bool:
    return (
        bool(argv)
        and os.path.basename(argv[0]) != "bwrap"
        and "gentity.guest" in argv
        and "-m" in argv
    )


def instance_pids(group: str) -> set[int]:
    """The processes in the instance's cgroups (empty when the host has none)."""
    pids: set[int] = set()
    for path in instance_cgroups(group):
        with contextlib.suppress(OSError, ValueError):
            pids.update(int(x) for x in (path / "cgroup.procs").read_text().split())
    return pids


def find_guest(group: str) -> int | None:
    """The guest daemon (``python … -m gentity.guest``, not bwrap) of an instance.

    ``group`` is the instance's cgroup name (``BenchServer.cgroup_name``). Found through the
    cgroup when there is one, otherwise by that name appearing in an ancestor's command line
    (the sandbox's bind mounts name the directories it was started with).
    """
    for pid in sorted(instance_pids(group)):
        if _is_guest(cmdline(pid)):
            return pid
    for pid in all_pids():
        if not _is_guest(cmdline(pid)):
            continue
        ancestor = parent(pid)
        while ancestor > 1:
            if any(group in part for part in cmdline(ancestor)):
                return pid
            ancestor = parent(ancestor)
    return None


def cgroup_memory_bytes(group: str) -> int | None:
    """``memory.usage_in_bytes`` of the instance's v1 memory cgroup, if any."""
    for found in instance_cgroups(group):
        path = found / "memory.usage_in_bytes"
        with contextlib.suppress(OSError, ValueError):
            return int(path.read_text())
    return None
