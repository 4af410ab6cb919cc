"""Figure 1: time from ``POST /api/instances`` to the output of a command typed in its terminal.

Baseline: spawning the catalog's ``bash -l`` on a raw PTY and seeing the same echo. The two
are interleaved (one instance, one raw spawn, …) so that drift in the machine's load hits both.
"""

from __future__ import annotations

import calendar
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench.context import Context, say
from bench.pty_baseline import RawPty
from bench.report import Figure
from bench.stats import median, ms, percentile, ratio
from bench.terminal import Terminal

GOAL_P50 = 0.100
GOAL_P95 = 0.150
COMMAND = "echo ready-$((6*7))\r"
MARKER = "ready-42"


def parse_timestamp(text: str) -> float:
    """``2026-11-28T10:15:02.123Z`` as a Unix time."""
    whole, _, millis = text.rstrip("Z").partition(".")
    return calendar.timegm(time.strptime(whole, "%Y-%m-%dT%H:%M:%S")) + int(millis or 0) / 1000


def spawn_time(pid_file: Path) -> float | None:
    """Wall-clock time the provider spawned the instance's first process, from the
    ``<pid> <starttime>`` it records (clock ticks since boot: about 10 ms resolution)."""
    try:
        ticks = int(pid_file.read_text().split()[1])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    booted = time.time() - uptime
    return booted + ticks / os.sysconf("SC_CLK_TCK")


def guest_milestones(root: Path, since: float) -> dict[str, float]:
    """Seconds after ``since`` (wall clock) at which the sandbox was spawned, the guest
    logged that it started, and that it started the agent (log: 1 ms resolution)."""
    found: dict[str, float] = {}
    spawned = spawn_time(root / "guest.pid")
    if spawned is not None:
        found["spawn"] = spawned - since
    log = root / "disk" / "logs" / "agent.log"
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return found
    for line in lines:
        try:
            record = json.loads(line)
            when = parse_timestamp(record["timestamp"]) - since
        except (ValueError, KeyError, TypeError):
            continue
        for key, prefix in (("guest", "guest started"), ("agent", "agent started")):
            if key not in found and str(record.get("message", "")).startswith(prefix):
                found[key] = when
    return found


async def instance_once(ctx: Context) -> tuple[float, float, float, dict[str, float]]:
    """(total, create call, delete call) seconds for one instance, and guest milestones."""
    server = ctx.server
    wall = time.time()
    start = time.perf_counter()
    instance_id = await server.create_shell()
    created = time.perf_counter()
    try:
        async with await Terminal.open(server.ws_url(instance_id)) as term:
            await term.send(COMMAND)
            await term.read_until(MARKER, timeout=20)
            done = time.perf_counter()
        milestones = guest_milestones(server.instance_dir(instance_id), wall)
    finally:
        deleting = time.perf_counter()
        await server.delete(instance_id)
        deleted = time.perf_counter()
    return done - start, created - start, deleted - deleting, milestones


def raw_once(ctx: Context) -> float:
    home = ctx.fresh_home()
    try:
        start = time.perf_counter()
        with RawPty(home) as pty:
            pty.write(COMMAND.encode())
            pty.read_until(MARKER.encode(), timeout=20)
            done = time.perf_counter()
        return done - start
    finally:
        shutil.rmtree(home, ignore_errors=True)


def python_startup(runs: int = 5) -> list[float]:
    """Wall time of starting and exiting this interpreter in isolated mode (as the guest)."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-I", "-c", "pass"], check=True)
        times.append(time.perf_counter() - start)
    return times


async def run(ctx: Context) -> Figure:
    fig = ctx.report.add(
        Figure(
            "1",
            "startup",
            "Time to first echoed command",
            goal=f"p50 <= {GOAL_P50 * 1000:.0f} ms, p95 <= {GOAL_P95 * 1000:.0f} ms",
        )
    )
    runs = ctx.plan.startup_runs
    say(f"[1] time to first echoed command: {runs} instances vs {runs} raw bash -l on a PTY")
    totals: list[float] = []
    creates: list[float] = []
    deletes: list[float] = []
    raws: list[float] = []
    spawned: list[float] = []
    guest_up: list[float] = []
    agent_up: list[float] = []
    raw_once(ctx)  # warm the page cache for bash and /etc/profile, as instances will have
    for index in range(runs):
        if index % 2:
            raws.append(raw_once(ctx))
        total, create, delete, milestones = await instance_once(ctx)
        if "guest" in milestones and "agent" in milestones:
            guest_up.append(milestones["guest"])
            agent_up.append(milestones["agent"])
        if "spawn" in milestones:
            spawned.append(milestones["spawn"])
        totals.append(total)
        creates.append(create)
        deletes.append(delete)
        if not index % 2:
            raws.append(raw_once(ctx))
        say(f"    {index + 1}/{runs}: instance {ms(total)} (POST {ms(create)}), raw {ms(raws[-1])}")
    p50, p95 = median(totals), percentile(totals, 95)
    raw50, raw95 = median(raws), percentile(raws, 95)
    fig.measured = f"p50 {ms(p50)}, p95 {ms(p95)}"
    fig.baseline = f"raw bash -l: p50 {ms(raw50)}, p95 {ms(raw95)}"
    fig.comparison = f"x{ratio(p50, raw50):.1f} (+{ms(p50 - raw50)} p50)"
    fig.passed = p50 <= GOAL_P50 and p95 <= GOAL_P95
    fig.notes.append(
        f"of which POST /api/instances (blocks until running): p50 {ms(median(creates))}, "
        f"p95 {ms(percentile(creates, 95))}; WebSocket + echo: "
        f"p50 {ms(median([t - c for t, c in zip(totals, creates, strict=True)]))}. "
        f"DELETE (not counted): p50 {ms(median(deletes))}, max {ms(max(deletes))}"
    )
    if guest_up:
        fig.notes.append(
            f"timeline p50 from the POST: sandbox spawned at ~+{ms(median(spawned))} "
            f"(10 ms resolution), guest daemon logs 'guest started' at "
            f"+{ms(median(guest_up))}, 'agent started' at +{ms(median(agent_up))}, POST returns "
            f"at +{ms(median(creates))} (log timestamps have 1 ms resolution); a bare "
            f"'python -I -c pass' takes p50 {ms(median(python_startup()))} here"
        )
    fig.data = {
        "spawnedSeconds": spawned,
        "guestStartedSeconds": guest_up,
        "agentStartedSeconds": agent_up,
        "instanceSeconds": totals,
        "createCallSeconds": creates,
        "deleteCallSeconds": deletes,
        "rawPtySeconds": raws,
        "p50": p50,
        "p95": p95,
        "baselineP50": raw50,
        "baselineP95": raw95,
    }
    return fig
