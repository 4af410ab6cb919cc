"""Figure 3: terminal output throughput over the WebSocket, as a ratio to a raw PTY.

The same file of base64 text (written once into the instance's volume, which the sandbox shows
at the same path) is ``cat``-ed by bash in the instance, by bash under terminado (the Python
peer, :mod:`bench.terminado_peer`) and by bash on a raw PTY; bytes of output are counted until
a completion marker (``done-42``, which base64 cannot contain). Runs alternate between them.
The WebSocket is measured as a browser would use it (permessage-deflate negotiated) and, for
diagnosis, without compression.
"""

from __future__ import annotations

import base64
import os
import shutil
import tempfile
import time
from pathlib import Path

from bench import procs
from bench.context import Context, say
from bench.floors import deflate_rate, host_cpu
from bench.pty_baseline import PtyTimeout, RawPty
from bench.report import Figure
from bench.stats import median, rate, ratio, size
from bench.terminado_peer import PeerServer, TerminadoTerminal
from bench.terminal import Terminal, TerminalError
from gentity.guest.logwriter import LogWriter
from gentity.guest.textlines import LineLogger

GOAL_RATIO = 0.8
MARKER = "done-42"
TIMEOUT = 300.0
DEFLATE_SAMPLE = 20_000_000


def write_payload(path: Path, num_bytes: int) -> None:
    """Base64 text in 76-column lines, ``num_bytes`` long (whole lines, a little less)."""
    line_bytes = 77  # encodebytes: 57 input bytes per 76-character line plus "\n"
    lines = num_bytes // line_bytes
    with path.open("wb") as f:
        while lines > 0:
            batch = min(lines, 40_000)
            f.write(base64.encodebytes(os.urandom(57 * batch)))
            lines -= batch


async def log_pipeline_rate(payload: Path, limit: int = 5_000_000) -> float:
    """Bytes/s of the guest's output-to-log path alone (``LineLogger`` feeding ``LogWriter``,
    as ``PtySession`` does), in this process, on the payload as a PTY delivers it (CRLF,
    4 KiB reads). CPU time, so other load on the machine counts less."""
    data = payload.read_bytes()[:limit].replace(b"\n", b"\r\n")
    with tempfile.TemporaryDirectory() as scratch:
        writer = LogWriter(Path(scratch) / "agent.log")
        logger = LineLogger(emit_lines=lambda lines: writer.write_lines("info", lines))
        start = time.process_time()
        for offset in range(0, len(data), 256 * 1024):
            logger.feed(data[offset : offset + 256 * 1024])
        logger.close()
        elapsed = time.process_time() - start
        writer.close()
    return len(data) / elapsed


def _floor(raw: float, raw_cpu_per_byte: float, deflate: float, log: float) -> str:
    """How many cores the goal's rate takes for work measured alone: the raw PTY run's own
    (bash, cat, the kernel's tty and the reader, from the host's CPU counters), permessage-
    deflate at the server's settings and the guest's log of the output. Nothing of the
    relay (guest, server, client) is in it, so it is a floor."""
    goal = GOAL_RATIO * raw
    parts = {"the raw PTY's": raw_cpu_per_byte, "deflate": 1 / deflate, "the guest's log": 1 / log}
    cores = {name: goal * per_byte for name, per_byte in parts.items()}
    return (
        f"floor: at the goal's {rate(goal)}, work measured alone takes "
        f"{sum(cores.values()):.2f} of the host's {os.cpu_count()} cores ("
        + ", ".join(f"{name} {value:.2f}" for name, value in cores.items())
        + f"; deflate alone runs at {rate(deflate)} of CPU time), before the guest, server and "
        "client relay a byte"
    )


async def ws_run(ctx: Context, url: str, command: str, compression: bool) -> tuple[int, float]:
    async with await Terminal.open(url, compression=compression) as term:
        await term.sync()
        start = time.perf_counter()
        await term.send(command)
        received = await term.read_until(MARKER, timeout=TIMEOUT)
        elapsed = time.perf_counter() - start
        await term.drain(quiet=0.2)
    return received, elapsed


async def peer_run(url: str, command: str) -> tuple[int, float]:
    term = await TerminadoTerminal.open_sized(url, 200, 50)
    async with term:
        await term.sync()
        start = time.perf_counter()
        await term.send(command)
        received = await term.read_until(MARKER, timeout=TIMEOUT)
        elapsed = time.perf_counter() - start
        await term.drain(quiet=0.2)
    return received, elapsed


def raw_run(home: Path, command: str) -> tuple[int, float]:
    with RawPty(home, cols=200, rows=50) as pty:
        pty.write(b"echo sync-$((6*7))\r")
        pty.read_until(b"sync-42")
        pty.drain()
        start = time.perf_counter()
        pty.write(command.encode())
        received = pty.read_until(MARKER.encode(), timeout=TIMEOUT)
        return received, time.perf_counter() - start


async def recover(ctx: Context, url: str) -> None:
    """After a failed run: interrupt whatever still prints and wait for a prompt."""
    async with await Terminal.open(url) as term:
        await term.send("\x03")
        await term.drain(quiet=0.5, limit=60)
        await term.sync(timeout=60)


async def run(ctx: Context) -> Figure:
    fig = ctx.report.add(
        Figure("3", "throughput", "Terminal output throughput", goal=f"ratio >= {GOAL_RATIO}")
    )
    plan = ctx.plan
    instance_id = await ctx.work_instance()
    volume = ctx.server.instance_dir(instance_id) / "disk" / "home"
    payload = volume / "bench-payload.txt"
    write_payload(payload, plan.throughput_bytes)
    # The shell starts in its home, the volume (shown at another path inside the sandbox).
    command = f"cat ~/{payload.name}; echo done-$((6*7))\r"
    url = ctx.server.ws_url(instance_id, "cols=200&rows=50")
    say(
        f"[3] output throughput: cat of {size(payload.stat().st_size)} of base64, "
        f"{plan.throughput_runs} runs each way"
    )
    home = ctx.fresh_home()
    (home / payload.name).symlink_to(payload)  # the same file for the raw baseline's `cat ~/…`
    ws_rates: list[float] = []
    plain_rates: list[float] = []
    raw_rates: list[float] = []
    raw_cpu_per_byte: list[float] = []
    peer_rates: list[float] = []
    failures: list[str] = []
    try:
        with PeerServer(home) as peer:
            for index in range(plan.throughput_runs):
                with host_cpu() as used:
                    raw_bytes, raw_seconds = raw_run(home, command)
                raw_rates.append(raw_bytes / raw_seconds)
                raw_cpu_per_byte.append(used.busy_seconds / raw_bytes)
                peer_bytes, peer_seconds = await peer_run(peer.url, command)
                peer_rates.append(peer_bytes / peer_seconds)
                for compression, rates in ((True, ws_rates), (False, plain_rates)):
                    label = "deflate" if compression else "no compression"
                    try:
                        got, seconds = await ws_run(ctx, url, command, compression)
                    except (TerminalError, TimeoutError, PtyTimeout) as exc:
                        failures.append(f"run {index + 1} ({label}): {exc or type(exc).__name__}")
                        ctx.report.problem(
                            f"throughput run {index + 1} ({label}): the terminal stream broke "
                            f"before the completion marker: {exc or type(exc).__name__}"
                        )
                        await recover(ctx, url)
                        continue
                    rates.append(got / seconds)
                    if got < raw_bytes * 0.99:
                        ctx.report.problem(
                            f"throughput run {index + 1} ({label}): only {size(got)} of output "
                            f"arrived over the WebSocket for {size(raw_bytes)} on the raw PTY"
                        )
                    say(
                        f"    run {index + 1}: raw {rate(raw_bytes / raw_seconds)}, terminado "
                        f"{rate(peer_bytes / peer_seconds)}, WebSocket ({label}) "
                        f"{rate(got / seconds)} ({size(got)} in {seconds:.2f} s)"
                    )
    finally:
        shutil.rmtree(home, ignore_errors=True)
    guest = procs.find_guest(ctx.server.cgroup_name(instance_id))
    guest_rss = procs.rss_kb(guest) if guest else 0
    pipeline = await log_pipeline_rate(payload)
    deflate = deflate_rate(payload.read_bytes()[:DEFLATE_SAMPLE])
    payload.unlink(missing_ok=True)
    raw = median(raw_rates)
    peer_rate = median(peer_rates)
    fig.baseline = (
        f"raw PTY: {rate(raw)}; terminado: {rate(peer_rate)}, ratio {ratio(peer_rate, raw):.2f} "
        f"(medians of {len(raw_rates)})"
    )
    if ws_rates:
        measured = median(ws_rates)
        fig.measured = f"{rate(measured)} (median of {len(ws_rates)})"
        fig.comparison = f"ratio {ratio(measured, raw):.2f}"
        fig.passed = ratio(measured, raw) >= GOAL_RATIO and not failures
    else:
        fig.measured = "no run completed"
    if plain_rates:
        fig.notes.append(
            f"WebSocket without permessage-deflate: {rate(median(plain_rates))}, "
            f"ratio {ratio(median(plain_rates), raw):.2f}"
        )
    if failures:
        fig.notes.append("failed runs: " + "; ".join(failures))
    fig.notes.append(
        f"diagnostic: the guest's output-to-log path alone (LineLogger -> LogWriter, a JSON "
        f"record per line, one write() per chunk) runs at {rate(pipeline)} of CPU time in-process"
    )
    fig.notes.append(_floor(raw, median(raw_cpu_per_byte), deflate, pipeline))
    fig.notes.append(
        f"guest daemon RSS after the bulk output: {guest_rss / 1024:.1f} MiB "
        "(the agent's output is also written to its log, line by line)"
    )
    fig.data = {
        "payloadBytes": plan.throughput_bytes,
        "websocketBytesPerSecond": ws_rates,
        "websocketNoCompressionBytesPerSecond": plain_rates,
        "rawPtyBytesPerSecond": raw_rates,
        "terminadoBytesPerSecond": peer_rates,
        "failures": failures,
        "guestRssKbAfter": guest_rss,
        "logPipelineBytesPerSecond": pipeline,
        "rawPtyCpuSecondsPerByte": raw_cpu_per_byte,
        "deflateBytesPerSecond": deflate,
    }
    return fig
