"""Finding and signalling an instance's processes through ``/proc``, when cgroups are absent.

A recorded process id is only trusted together with its start time, so a pid reused by an
unrelated process after a reboot is never mistaken for (or killed as) an instance's.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from pathlib import Path

log = logging.getLogger(__name__)


def _start_time(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 22 (starttime); split after the command name, which may contain spaces.
    return stat.rsplit(")", 1)[1].split()[19]


def record(pid_file: Path, pid: int) -> None:
    pid_file.write_text(f"{pid} {_start_time(pid)}\n")


def recorded(pid_file: Path) -> int | None:
    """The recorded pid if that very process still runs."""
    try:
        pid_text, started = pid_file.read_text().split()
    except (OSError, ValueError):
        return None
    pid = int(pid_text)
    return pid if _start_time(pid) == started else None


def recorded_pid(pid_file: Path) -> int | None:
    """The recorded pid, whether or not that process still runs (to look up how it ended)."""
    try:
        return int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def forget(pid_file: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        pid_file.unlink()


def alive(pid: int) -> bool:
    return _state(pid) not in ("Z", "?")


def tree(root: int) -> set[int]:
    """``root`` and all its live descendants."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    found, stack = set(), [root]
    while stack:
        pid = stack.pop()
        if pid in found or not alive(pid):
            continue
        found.add(pid)
        stack.extend(children.get(pid, []))
    return found


def is_guest(pid: int) -> bool:
    with contextlib.suppress(OSError):
        return b"gentity.guest" in Path(f"/proc/{pid}/cmdline").read_bytes()
    return False


def is_guest_daemon(pid: int) -> bool:
    """The guest daemon's own process (``python -I -m gentity.guest``), not the sandbox
    processes whose command lines name it too. The instance could name a process so: this
    only tells whether the instance looks alive, never what may be signalled."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
    except OSError:
        return False
    return argv[-2:] == [b"-m", b"gentity.guest"] and not argv[0].endswith(b"bwrap")


def kill_tree(pids: set[int], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while pids := {p for p in pids if alive(p)}:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        if time.monotonic() > deadline:
            # SIGKILL waits for a process in uninterruptible sleep (D): say which ones kept an
            # operation waiting this long.
            log.warning(
                "processes still alive %g s after SIGKILL: %s",
                timeout,
                ", ".join(f"{pid} ({_state(pid)})" for pid in sorted(pids)),
            )
            return
        time.sleep(0.02)


def _state(pid: int) -> str:
    """A process's state letter from ``/proc/<pid>/stat`` (``?`` once it is gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "?"
