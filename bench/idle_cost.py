"""Figure 11: what idle instances cost: CPU over a window, and each guest daemon's memory.

Many shell instances are created and left alone (nobody attached, nothing typed). Then the CPU
time of the server and every process under it (sandboxes, guest daemons, their shells, network
helpers) is read from ``/proc`` at the start and the end of a window. The baseline is the same
server with no instance, measured over the same window before the instances exist. Goal (issue
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


async def _cpu_share(root: int, seconds: float) -> tuple[float, int]:
    """The share of one core the process tree used over ``seconds``, and how many processes."""
    before = {pid: _cpu_ticks(pid) for pid in _tree(root)}
    await asyncio.sleep(seconds)
    after = {pid: _cpu_ticks(pid) for pid in _tree(root)}
    # Processes alive at both ends; one that started or ended inside the window counts whole.
    ticks = sum(after[p] - before.get(p, 0) for p in after if after[p])
    return ticks / os.sysconf("SC_CLK_TCK") / seconds, len(after)


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
    alone, _ = await _cpu_share(server_pid, window)
    created: list[str] = []
    try:
        for start in range(0, count, CREATE_AT_ONCE):
            batch = min(CREATE_AT_ONCE, count - start)
            created += await asyncio.gather(*(ctx.server.create_shell() for _ in range(batch)))
        await asyncio.sleep(SETTLE_SECONDS)
        share, processes = await _cpu_share(server_pid, window)
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
    fig.data = {"coreShare": share, "serverAloneShare": alone, "guestRssKb": guest_kb}
    return fig
