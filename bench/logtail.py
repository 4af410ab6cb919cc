"""Figure 4: the cost of ``GET /api/instances/<id>/logs?lines=1000`` on a 1 MB vs a 1 GB log.

A stopped instance's ``agent.log`` is replaced with generated JSON lines in the guest's format
(``LogWriter``: ``json.dumps`` of timestamp, level, message). The big file is made by repeating
a pre-built block in large writes, inside the data directory, and deleted afterwards. Calls
alternate between the two files (swapped in as ``agent.log`` by an atomic rename of a hard
link), so load drift on a shared machine does not land on one of them only. The same two files
are also timed through ``gentity.guest.logreader.tail`` directly.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import time
from pathlib import Path

from bench.context import Context, say
from bench.report import Figure
from bench.stats import median, ms, percentile, ratio, size
from gentity.guest.logformat import format_timestamp
from gentity.guest.logreader import tail
from gentity.providers.compute.local import volumes

GOAL_RATIO = 2.0
LINES = 1000
BLOCK_BYTES = 4 * 1024 * 1024
MIN_FREE = 5 * 1000**3
_TEXT = (
    "build test lint compile error warning passed failed src/app.py line ok npm install "
    "collecting downloading running tests in 0.42s writing file diff --git index hunk"
)
WORDS = _TEXT.split()


def make_block(target: int, seed: int = 42) -> bytes:
    """Whole log lines, ``target`` bytes or a little less; each line 100-200 bytes."""
    rng = random.Random(seed)
    base = time.time() - 86400
    out = bytearray()
    step = 0
    while True:
        words: list[str] = []
        wanted = rng.randint(40, 130)
        while sum(len(w) + 1 for w in words) < wanted:
            words.append(rng.choice(WORDS))
        level = "info" if rng.random() < 0.9 else rng.choice(("warn", "error"))
        record = {
            "timestamp": format_timestamp(base + step * 0.013),
            "level": level,
            "message": " ".join(words)[:wanted],
        }
        line = (json.dumps(record, ensure_ascii=False) + "\n").encode()
        if len(out) + len(line) > target:
            return bytes(out)
        out += line
        step += 1


def write_log(path: Path, block: bytes, num_bytes: int) -> float:
    """Replace ``path`` by ``block`` repeated up to ``num_bytes``; returns seconds taken."""
    start = time.perf_counter()
    temporary = path.with_name(path.name + ".bench-tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        written = 0
        while written < num_bytes:
            piece = block if num_bytes - written >= len(block) else _cut(block, num_bytes - written)
            if not piece:
                break
            view = memoryview(piece)
            while view:
                view = view[os.write(fd, view) :]
            written += len(piece)
    finally:
        os.close(fd)
    os.replace(temporary, path)
    return time.perf_counter() - start


def _cut(block: bytes, limit: int) -> bytes:
    """The whole lines of ``block`` that fit in ``limit`` bytes."""
    end = block.rfind(b"\n", 0, limit)
    return block[: end + 1] if end >= 0 else b""


def swap_in(log: Path, source: Path) -> None:
    """Make ``log`` the file ``source`` (a hard link, renamed into place atomically)."""
    link = log.with_name(log.name + ".bench-link")
    link.unlink(missing_ok=True)
    os.link(source, link)
    os.replace(link, log)


async def api_call(ctx: Context, instance_id: str) -> tuple[float, int]:
    """Seconds for one ``GET …/logs?lines=1000`` (answer parsed), and the records returned."""
    start = time.perf_counter()
    response = await ctx.server.api.get(
        f"/api/instances/{instance_id}/logs", params={"lines": LINES}
    )
    response.raise_for_status()
    count = len(response.json()["logs"])
    return time.perf_counter() - start, count


def direct_call(log: Path) -> float:
    start = time.perf_counter()
    records = tail(log, LINES)
    elapsed = time.perf_counter() - start
    assert len(records) == LINES
    return elapsed


async def measure(
    ctx: Context, instance_id: str, log: Path, files: dict[str, Path]
) -> dict[str, dict[str, list[float]]]:
    """Alternate the two files call by call (which goes first alternates too), so that the
    machine's changing load hits both alike. Two warm-up calls each are not counted."""
    results: dict[str, dict[str, list[float]]] = {k: {"api": [], "direct": []} for k in files}
    for index in range(ctx.plan.log_calls + 2):
        order = list(files) if index % 2 == 0 else list(reversed(files))
        for label in order:
            swap_in(log, files[label])
            seconds, count = await api_call(ctx, instance_id)
            if count != LINES:
                ctx.report.problem(
                    f"GET /api/instances/<id>/logs?lines={LINES} on the {label} log returned "
                    f"{count} records, not {LINES}"
                )
            direct = direct_call(log)
            if index >= 2:
                results[label]["api"].append(seconds)
                results[label]["direct"].append(direct)
    return results


def grow_volume(root: Path, needed: int) -> None:
    """The logs live on the instance's volume (1 GB for a shell): grow it, stopped, to hold
    both files with room to spare."""
    size_gb = max(2, math.ceil(needed * 1.2 / 2**30) + 1)
    volumes.unmount(root)
    volumes.resize(root, size_gb)
    volumes.ensure_mounted(root)


def big_size(ctx: Context) -> tuple[int, str | None]:
    wanted = ctx.plan.log_big_bytes
    free = shutil.disk_usage(ctx.server.data_dir).free
    if free >= MIN_FREE:
        return wanted, None
    scaled = max(min(wanted, free // 5), 10 * ctx.plan.log_small_bytes)
    return scaled, (
        f"only {size(free)} free on the data directory's disk (< {size(MIN_FREE)}): "
        f"the big log is scaled down to {size(scaled)}"
    )


async def run(ctx: Context) -> Figure:
    fig = ctx.report.add(
        Figure("4", "logtail", "Log tail (lines=1000)", goal=f"big/small ratio <= {GOAL_RATIO:g}")
    )
    plan = ctx.plan
    big, note = big_size(ctx)
    if note:
        fig.notes.append(note)
        say(f"    note: {note}")
    say(f"[4] log tail: {LINES} lines of a {size(plan.log_small_bytes)} vs a {size(big)} log")
    instance_id = await ctx.server.create_shell()
    await ctx.server.action(instance_id, "stop")
    root = ctx.server.instance_dir(instance_id)
    grow_volume(root, plan.log_small_bytes + big)
    logs = root / "disk" / "logs"
    log = logs / "agent.log"
    files = {"small": logs / "bench-small.log", "big": logs / "bench-big.log"}
    block = make_block(BLOCK_BYTES)
    sizes: dict[str, int] = {}
    try:
        for label, num_bytes in (("small", plan.log_small_bytes), ("big", big)):
            seconds = write_log(files[label], block, num_bytes)
            sizes[label] = files[label].stat().st_size
            say(f"    wrote {size(sizes[label])} in {seconds:.1f} s")
        say(f"    timing {plan.log_calls} calls each, alternating the two files")
        results = await measure(ctx, instance_id, log, files)
    finally:
        for path in (log, *files.values()):  # the big file goes, whatever happened
            path.unlink(missing_ok=True)
        await ctx.server.delete(instance_id)
    api_small, api_big = (median(results[k]["api"]) for k in ("small", "big"))
    dir_small, dir_big = (median(results[k]["direct"]) for k in ("small", "big"))
    fig.measured = f"{size(sizes['big'])}: median {ms(api_big)}"
    fig.baseline = f"{size(sizes['small'])}: median {ms(api_small)}"
    fig.comparison = f"ratio {ratio(api_big, api_small):.2f}"
    fig.passed = ratio(api_big, api_small) <= GOAL_RATIO
    fig.notes.append(
        f"tail() directly: {ms(dir_small)} ({size(sizes['small'])}) vs {ms(dir_big)} "
        f"({size(sizes['big'])}), ratio {ratio(dir_big, dir_small):.2f}; "
        f"API p95 {ms(percentile(results['small']['api'], 95))} vs "
        f"{ms(percentile(results['big']['api'], 95))}"
    )
    fig.data = {
        "sizes": sizes,
        "apiSeconds": {k: v["api"] for k, v in results.items()},
        "directSeconds": {k: v["direct"] for k, v in results.items()},
        "apiRatio": ratio(api_big, api_small),
        "directRatio": ratio(dir_big, dir_small),
    }
    return fig
