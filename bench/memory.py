"""Figure 5: resident memory of an idle shell instance's guest daemon.

Baselines: a bare interpreter (the same Python, ``-I -c 'import time; time.sleep(5)'``) and
the agent's own ``bash -l``. The whole instance's memory cgroup usage is printed as well.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys

from bench import procs
from bench.context import Context, say
from bench.report import Figure
from bench.stats import median, mib, ratio

GOAL_KB = 20 * 1024  # 20 MiB of VmRSS
SAMPLES = 5


async def sample_rss(pid: int) -> int:
    values = []
    for _ in range(SAMPLES):
        values.append(procs.rss_kb(pid))
        await asyncio.sleep(0.1)
    return int(median(values))


async def bare_python_kb(idle: float) -> int:
    process = subprocess.Popen(
        [sys.executable, "-I", "-c", "import time; time.sleep(5)"],
        stdin=subprocess.DEVNULL,
    )
    try:
        await asyncio.sleep(min(idle, 4.0))
        return await sample_rss(process.pid)
    finally:
        process.kill()
        process.wait()


async def run(ctx: Context) -> Figure:
    fig = ctx.report.add(
        Figure("5", "memory", "Idle guest daemon RSS", goal=f"<= {GOAL_KB // 1024} MiB VmRSS")
    )
    idle = ctx.plan.idle_seconds
    say(f"[5] idle memory: a fresh shell instance after {idle:g} s idle")
    instance_id = await ctx.server.create_shell()
    try:
        await asyncio.sleep(idle)
        group = ctx.server.cgroup_name(instance_id)
        guest = procs.find_guest(group)
        if guest is None:
            raise RuntimeError(f"no guest daemon process found for {instance_id}")
        guest_kb = await sample_rss(guest)
        shells = [p for p in procs.children(guest) if "bash" in " ".join(procs.cmdline(p))]
        bash_kb = await sample_rss(shells[0]) if shells else 0
        members = procs.instance_pids(group)
        total_rss = sum(procs.rss_kb(p) for p in members)
        cgroup_bytes = procs.cgroup_memory_bytes(group)
        described = [
            f"{p} {' '.join(procs.cmdline(p))[:40]}… {procs.rss_kb(p)} kB" for p in sorted(members)
        ]
    finally:
        await ctx.server.delete(instance_id)
    python_kb = await bare_python_kb(idle)
    fig.measured = f"guest {mib(guest_kb * 1024)}"
    fig.baseline = f"bare python {mib(python_kb * 1024)}, agent bash {mib(bash_kb * 1024)}"
    extra = mib((guest_kb - python_kb) * 1024)
    fig.comparison = f"x{ratio(guest_kb, python_kb):.2f} python (+{extra})"
    fig.passed = guest_kb <= GOAL_KB
    whole = f"{mib(cgroup_bytes)}" if cgroup_bytes is not None else "no memory cgroup"
    fig.notes.append(
        f"whole instance: memory.usage_in_bytes {whole} (includes page cache); "
        f"sum of RSS of its {len(members)} processes {mib(total_rss * 1024)}"
    )
    fig.data = {
        "guestRssKb": guest_kb,
        "barePythonRssKb": python_kb,
        "agentBashRssKb": bash_kb,
        "cgroupUsageBytes": cgroup_bytes,
        "instanceRssSumKb": total_rss,
        "instanceProcesses": described,
    }
    return fig
