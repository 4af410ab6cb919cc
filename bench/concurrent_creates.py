"""Figure 10: 20 shell instances created at once, beside one created alone.

The goal (issue 11) is that 20 concurrent creates finish within twice the time the machine
needs for their work done one by one, shared over its cores: ``2 * 20 * one create / cores``.
A create that waits on another's unrelated lock shows up here as a long tail. One create is
the median of a few sequential ones in the same run; each ``POST /api/instances`` blocks until
the instance runs. Warm spares are used as they are for any user: the first creates take them.
"""

from __future__ import annotations

import asyncio
import os
import time

from bench.context import Context, say
from bench.floors import host_cpu
from bench.report import Figure
from bench.stats import median, percentile

CONCURRENT = 20
ALONE_RUNS = 3


async def _timed_create(ctx: Context) -> tuple[str, float]:
    start = time.perf_counter()
    instance_id = await ctx.server.create_shell()
    return instance_id, time.perf_counter() - start


def _took_a_spare(ctx: Context, instance_id: str) -> bool:
    """Whether the instance is a warm spare taken over (it keeps the spare's cgroup name)."""
    return ctx.server.cgroup_name(instance_id).startswith(".spare-")


async def run(ctx: Context) -> Figure:
    cores = os.cpu_count() or 1
    fig = ctx.report.add(
        Figure(
            "10",
            "concurrent-creates",
            f"{CONCURRENT} concurrent creates",
            goal=f"all done <= 2 x {CONCURRENT} x one create / {cores} cores",
        )
    )
    say(f"[10] {CONCURRENT} concurrent creates beside {ALONE_RUNS} alone")
    alone: list[float] = []
    alone_warm = 0
    for _ in range(ALONE_RUNS):
        instance_id, seconds = await _timed_create(ctx)
        alone.append(seconds)
        alone_warm += _took_a_spare(ctx, instance_id)
        await ctx.server.delete(instance_id)
    with host_cpu() as burst:
        start = time.perf_counter()
        results = await asyncio.gather(*(_timed_create(ctx) for _ in range(CONCURRENT)))
        wall = time.perf_counter() - start
    warm = sum(_took_a_spare(ctx, instance_id) for instance_id, _ in results)
    await asyncio.gather(*(ctx.server.delete(instance_id) for instance_id, _ in results))
    each = [seconds for _, seconds in results]
    one = median(alone)
    budget = 2 * CONCURRENT * one / cores
    fig.measured = (
        f"all {CONCURRENT} in {wall:.2f} s; each p50 {median(each):.2f} s, max {max(each):.2f} s"
    )
    fig.baseline = f"one create alone: {one:.2f} s (median of {ALONE_RUNS})"
    fig.comparison = f"{wall / budget:.2f} of the budget ({budget:.2f} s)"
    fig.passed = wall <= budget
    fig.notes.append(f"each create's p95 {percentile(each, 95):.2f} s; {cores} cores")
    fig.notes.append(
        f"warm spares taken: {alone_warm} of the {ALONE_RUNS} alone, {warm} of the "
        f"{CONCURRENT} at once (the others booted a sandbox of their own)"
    )
    # The budget in CPU: what the cores can do in it, shared by the creates. A burst that keeps
    # the cores busy throughout is waiting on CPU, not on a lock.
    allowance = budget * cores / CONCURRENT
    fig.notes.append(
        f"floor: the burst kept the {cores} cores {burst.utilisation:.0%} busy, "
        f"{burst.busy_seconds * 1000 / CONCURRENT:.0f} ms of host CPU per create (every "
        f"process: server, sandboxes, guests, this client); the budget has "
        f"{allowance * 1000:.0f} ms of CPU per create"
    )
    fig.data = {
        "burstCpuSeconds": burst.busy_seconds,
        "burstUtilisation": burst.utilisation,
        "aloneSeconds": alone,
        "eachSeconds": each,
        "wallSeconds": wall,
        "aloneWarm": alone_warm,
        "concurrentWarm": warm,
    }
    return fig
