"""Figure 11: what idle instances cost: CPU over a window, and each guest daemon's memory.

Many shell instances are created and left alone (nobody attached, nothing typed). Then the CPU
time of the server and every process under it (sandboxes, guest daemons, their shells, network
helpers) is read from ``/proc`` at the start and the end of a window. The baseline is the same
server with no instance, measured over the same window before the instances exist. The notes
split that CPU time by process kind (``KINDS``: server, guest daemons, agent shells, slirp4netns,
the sandbox's bwrap/setpriv, other): CPU time, unlike a wall-clock rate, holds on a busy host.
The window should be at least an idle watch's period (``recovery.WATCH_SECONDS``). Goal (issue
11): 200 idle shell instances use at most 3 % of one core in total, each guest at most 20 MiB.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

from bench import procs
from bench.context import Context, say
from bench.report import Figure
from bench.stats import median
from gentity.server.recovery import WATCH_SECONDS

GOAL_CORE_SHARE = 0.03
GOAL_GUEST_KB = 20 * 1024
CREATE_AT_ONCE = 10
SETTLE_SECONDS = 5.0


def _cpu_ticks(pid: int) -> int:
    """utime + stime of a process, in clock ticks (0 once it is gone)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    return 0


def _tree(root: int) -> set[int]:
    """``root`` and every process under it."""
    parents: dict[int, list[int]] = {}
    for pid in procs.all_pids():
        parents.setdefault(procs.parent(pid), []).append(pid)
    found, todo = set(), [root]
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo.extend(parents.get(pid, []))
    return found


KINDS = ("server", "guest daemon", "agent shell", "slirp4netns", "bwrap/setpriv", "other")


def _kind(pid: int, root: int) -> str:
    """Which of ``KINDS`` a process in the server's tree is, from its command line."""
    if pid == root:
        return "server"
    argv = procs.cmdline(pid)
    name = os.path.basename(argv[0]) if argv else ""
    if name == "slirp4netns":
        return "slirp4netns"
    if name in ("bwrap", "setpriv"):
        return "bwrap/setpriv"
    if "gentity.guest" in argv:
        return "guest daemon"
    if name in ("sh", "bash", "dash", "zsh", "ash") or name.endswith("sh"):
        return "agent shell"
    return "other"


async def _cpu_share(root: int, seconds: float) -> tuple[float, int, dict[str, float]]:
    """The share of one core the process tree used over ``seconds``, how many processes, and
    that share by process kind (``KINDS``)."""
    before = {pid: _cpu_ticks(pid) for pid in _tree(root)}
    await asyncio.sleep(seconds)
    after = {pid: _cpu_ticks(pid) for pid in _tree(root)}
    # Processes alive at both ends; one that started or ended inside the window counts whole.
    per_pid = {p: after[p] - before.get(p, 0) for p in after if after[p]}
    scale = os.sysconf("SC_CLK_TCK") * seconds
    by_kind = dict.fromkeys(KINDS, 0.0)
    for pid, ticks in per_pid.items():
        by_kind[_kind(pid, root)] += ticks / scale
    return sum(per_pid.values()) / scale, len(after), by_kind


async def run(ctx: Context) -> Figure:
    plan = ctx.plan
    count, window = plan.idle_instances, plan.idle_window
    fig = ctx.report.add(
        Figure(
            "11",
            "idle-cost",
            "Idle instances: CPU and guest memory",
            goal=f"{count} idle: <= {GOAL_CORE_SHARE:.0%} of a core, guest <= 20 MiB",
        )
    )
    server_pid = ctx.server.pid
    say(f"[11] idle cost: the server alone, then {count} idle shell instances, {window:g} s each")
    alone, _, _ = await _cpu_share(server_pid, window)
    created: list[str] = []
    try:
        for start in range(0, count, CREATE_AT_ONCE):
            batch = min(CREATE_AT_ONCE, count - start)
            created += await asyncio.gather(*(ctx.server.create_shell() for _ in range(batch)))
        await asyncio.sleep(SETTLE_SECONDS)
        share, processes, by_kind = await _cpu_share(server_pid, window)
        guests = [procs.find_guest(ctx.server.cgroup_name(i)) for i in created]
        guest_kb = [procs.rss_kb(pid) for pid in guests if pid is not None]
    finally:
        for start in range(0, len(created), CREATE_AT_ONCE):
            await asyncio.gather(
                *(ctx.server.delete(i) for i in created[start : start + CREATE_AT_ONCE])
            )
    fig.measured = (
        f"{share:.1%} of a core for {count} instances; guest RSS p50 "
        f"{median(guest_kb) / 1024:.1f} MiB, max {max(guest_kb) / 1024:.1f} MiB"
    )
    fig.baseline = f"the server alone: {alone:.1%} of a core"
    fig.comparison = f"+{share - alone:.1%} of a core ({processes} processes)"
    fig.passed = share <= GOAL_CORE_SHARE and max(guest_kb) <= GOAL_GUEST_KB
    fig.notes.append(f"{len(guest_kb)} guests found of {count}; window {window:g} s")
    if window < WATCH_SECONDS:
        fig.notes.append(
            f"the window is shorter than an idle watch's {WATCH_SECONDS:g} s period: "
            "it may see none of their answers and undercount"
        )
    # CPU time, not wall-clock rates: robust to other work on the host.
    fig.notes.append(
        "CPU by process kind: " + ", ".join(f"{k} {v:.2%}" for k, v in by_kind.items())
    )
    fig.data = {
        "coreShare": share,
        "serverAloneShare": alone,
        "guestRssKb": guest_kb,
        "coreShareByKind": by_kind,
    }
    return fig
