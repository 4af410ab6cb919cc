"""Figure 6: the server under stream load: 1,000 log followers and 100 terminals on one instance.

All followers (``logs?follow=1``) and terminals are opened on one shell instance; each terminal
runs a loop that prints a line every 100 ms. Then lines are appended to the instance's
``agent.log`` (in the guest's format), 1,000 a second: every 100 ms, 99 filler lines and a marker
line, while workers call ``GET /api/instances`` and ``GET /healthz`` as fast as they are
answered. Figures:

- the lag of the last marker line at each follower (written → received), p50/p99;
- errors: followers or terminals that failed or ended, a follower that never got the last line,
  an API call that was not ``200``;
- the server's resident memory, idle and at its peak under the load;
- ``/api/instances`` latency and throughput, beside ``/healthz`` measured in the same window
  (and both measured before the streams were opened).

The followers speak plain HTTP/1.1 over asyncio streams: a thousand httpx streams would cost
the benchmark more CPU than the server it measures, on the same cores.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench import procs
from bench.context import Context, say
from bench.report import Figure
from bench.stats import mib, ms, percentile
from bench.terminal import Terminal
from gentity.guest.logformat import format_timestamp

GOAL_LAG_P99 = 0.25
GOAL_LIST_P99 = 0.25
MARK_INTERVAL = 0.1
#: Lines written with each marker: the log grows by 1,000 lines a second.
FILLER_PER_MARK = 99
MARK = re.compile(rb"bench-mark (\d+)")
# ``read -t`` waits without forking: a ``sleep`` per line would make 1,000 processes a second.
TERMINAL_LOOP = "while :; do echo tick-$RANDOM; read -rt 0.1 _; done\r"
API_WORKERS = 4
CONNECT_BATCH = 100


@dataclass
class Follower:
    """One ``logs?follow=1`` stream; when each marker line arrived (monotonic seconds)."""

    connected: asyncio.Event = field(default_factory=asyncio.Event)
    received: dict[int, float] = field(default_factory=dict)
    error: str | None = None

    async def run(self, host: str, port: int, path: str, token: str) -> None:
        writer: asyncio.StreamWriter | None = None
        try:
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(
                f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                f"Authorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n".encode()
            )
            status = await reader.readline()
            if b" 200 " not in status:
                raise RuntimeError(f"answered {status.decode(errors='replace').strip()}")
            headers = (await reader.readuntil(b"\r\n\r\n")).lower()
            if b"transfer-encoding: chunked" not in headers:
                raise RuntimeError("the stream is not chunked")
            self.connected.set()
            pending = b""
            while True:
                size = int((await reader.readline()).split(b";")[0], 16)
                if size == 0:
                    raise RuntimeError("the stream ended")
                pending += await reader.readexactly(size)
                await reader.readexactly(2)  # the CRLF after each chunk
                # Markers are searched in whole lines, all of a chunk at once: a thousand
                # followers of 1,000 lines a second are a million lines a second here.
                end = pending.rfind(b"\n") + 1
                now = time.monotonic()
                for found in MARK.finditer(pending, 0, end):
                    self.received[int(found.group(1))] = now
                pending = pending[end:]
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            self.connected.set()  # a failed follower must not hold up the others' start
            if writer is not None:
                writer.close()


@dataclass
class Calls:
    """Latencies of one endpoint's calls over a window, and the calls that failed."""

    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    seconds: float = 0.0

    @property
    def per_second(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else 0.0

    def figures(self) -> dict[str, float]:
        return {
            "p50": percentile(self.latencies, 50),
            "p99": percentile(self.latencies, 99),
            "perSecond": self.per_second,
            "errors": self.errors,
        }

    def describe(self) -> str:
        p50, p99 = percentile(self.latencies, 50), percentile(self.latencies, 99)
        return f"p50 {ms(p50)}, p99 {ms(p99)}, {self.per_second:.0f}/s"


async def hammer(api: httpx.AsyncClient, path: str, stop: asyncio.Event) -> Calls:
    """Call ``path`` from a few workers, back to back, until ``stop`` is set."""
    calls = Calls()
    started = time.monotonic()

    async def worker() -> None:
        while not stop.is_set():
            begun = time.perf_counter()
            try:
                response = await api.get(path, timeout=30)
                ok = response.status_code == 200
            except httpx.HTTPError:
                ok = False
            if ok:
                calls.latencies.append(time.perf_counter() - begun)
            else:
                calls.errors += 1

    await asyncio.gather(*(worker() for _ in range(API_WORKERS)))
    calls.seconds = time.monotonic() - started
    return calls


async def measure_api(api: httpx.AsyncClient, seconds: float) -> tuple[Calls, Calls]:
    """``/api/instances`` and ``/healthz``, side by side for ``seconds``."""
    stop = asyncio.Event()
    both = asyncio.gather(hammer(api, "/api/instances", stop), hammer(api, "/healthz", stop))
    await asyncio.sleep(seconds)
    stop.set()
    listed, health = await both
    return listed, health


async def write_marks(log: Path, count: int, sent: dict[int, float]) -> None:
    """Append ``count`` marker lines to the instance's log, one every MARK_INTERVAL, each
    after FILLER_PER_MARK filler lines (in the same write)."""
    for number in range(count):
        stamp = format_timestamp(time.time())
        lines = [
            json.dumps({"timestamp": stamp, "level": "info", "message": f"filler {n} " + _TEXT})
            for n in range(FILLER_PER_MARK)
        ]
        lines.append(
            json.dumps({"timestamp": stamp, "level": "info", "message": f"bench-mark {number}"})
        )
        with log.open("ab") as out:
            out.write(("\n".join(lines) + "\n").encode())
        sent[number] = time.monotonic()
        await asyncio.sleep(MARK_INTERVAL)


_TEXT = "collecting downloading running tests in 0.42s src/app.py ok"


async def peak_rss(pid: int, stop: asyncio.Event) -> int:
    peak = 0
    while not stop.is_set():
        peak = max(peak, procs.rss_kb(pid))
        await asyncio.sleep(0.2)
    return peak


async def keep_reading(term: Terminal, failures: list[str]) -> None:
    """Consume a terminal's output as a browser would, until it is closed."""
    try:
        while True:
            await term.next_output(timeout=30)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        failures.append(f"terminal: {type(exc).__name__}: {exc}")


async def run(ctx: Context) -> Figure:
    plan = ctx.plan
    followers_n, terminals_n = plan.load_followers, plan.load_terminals
    fig = ctx.report.add(
        Figure(
            "6",
            "load",
            f"Load: {followers_n} log followers + {terminals_n} terminals",
            goal=f"0 errors, lag p99 <= {ms(GOAL_LAG_P99)}, list p99 <= {ms(GOAL_LIST_P99)}",
        )
    )
    server = ctx.server
    assert server.process is not None
    say(f"[6] load: {followers_n} log followers and {terminals_n} terminals on one instance")
    instance_id = await server.create_shell()
    log = server.instance_dir(instance_id) / "disk" / "logs" / "agent.log"
    idle_rss = procs.rss_kb(server.process.pid)
    idle_list, idle_health = await measure_api(server.api, plan.load_seconds / 2)
    say(f"    idle: list {idle_list.describe()}; healthz {idle_health.describe()}")

    failures: list[str] = []
    terminals: list[Terminal] = []
    readers: list[asyncio.Task[None]] = []
    followers = [Follower() for _ in range(followers_n)]
    streams: list[asyncio.Task[None]] = []
    try:
        for _ in range(terminals_n):
            term = await Terminal.open(server.ws_url(instance_id))
            terminals.append(term)
            await term.send(TERMINAL_LOOP)
            readers.append(asyncio.create_task(keep_reading(term, failures)))
        say(f"    {terminals_n} terminals print a line every {ms(MARK_INTERVAL)}")
        path = f"/api/instances/{instance_id}/logs?follow=1&lines=1"
        opened = time.monotonic()
        for start in range(0, followers_n, CONNECT_BATCH):
            batch = followers[start : start + CONNECT_BATCH]
            streams += [
                asyncio.create_task(f.run("127.0.0.1", server.port, path, server.token))
                for f in batch
            ]
            async with asyncio.timeout(60):
                await asyncio.gather(*(f.connected.wait() for f in batch))
        say(f"    {followers_n} followers connected in {time.monotonic() - opened:.1f} s")

        marks = max(2, round(plan.load_seconds / MARK_INTERVAL))
        sent: dict[int, float] = {}
        stop = asyncio.Event()
        rss = asyncio.create_task(peak_rss(server.process.pid, stop))
        # The followers run in this process, on the server's cores: its own CPU is reported
        # so that a lag caused by the benchmark itself can be told apart.
        cpu_started, window_started = time.process_time(), time.monotonic()
        api = asyncio.create_task(measure_api(server.api, plan.load_seconds))
        await write_marks(log, marks, sent)
        listed, health = await api
        say(f"    {marks} lines written; waiting for the followers to get the last one")
        last = marks - 1
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(30):
                while any(last not in f.received and f.error is None for f in followers):
                    await asyncio.sleep(0.05)
        stop.set()
        peak = await rss
        client_cpu = (time.process_time() - cpu_started) / (time.monotonic() - window_started)
    finally:
        say("    closing the streams")
        for task in [*streams, *readers]:
            task.cancel()
        await asyncio.gather(*streams, *readers, return_exceptions=True)
        await asyncio.gather(*(t.close() for t in terminals), return_exceptions=True)
        await server.delete(instance_id)

    lags = [f.received[last] - sent[last] for f in followers if last in f.received]
    failed = [f.error or "never got the last line" for f in followers if last not in f.received]
    errors = len(failed) + len(failures) + listed.errors + health.errors
    lag50, lag99 = percentile(lags, 50), percentile(lags, 99)
    list99, health99 = percentile(listed.latencies, 99), percentile(health.latencies, 99)
    fig.measured = (
        f"lag p50 {ms(lag50)}, p99 {ms(lag99)}; /api/instances {listed.describe()}; "
        f"{errors} errors; server RSS {mib(peak * 1024)}"
    )
    fig.baseline = f"/healthz {health.describe()}"
    fig.comparison = f"list p99 x{list99 / health99:.1f} healthz p99"
    fig.passed = errors == 0 and lag99 <= GOAL_LAG_P99 and list99 <= GOAL_LIST_P99
    fig.notes.append(
        f"before the streams: /api/instances {idle_list.describe()}, "
        f"/healthz {idle_health.describe()}; server RSS {mib(idle_rss * 1024)}"
    )
    fig.notes.append(f"the benchmark's own process used {client_cpu:.0%} of a CPU meanwhile")
    for problem in sorted(set(failed + failures))[:5]:
        fig.notes.append(f"error: {problem}")
    fig.data = {
        "followers": followers_n,
        "terminals": terminals_n,
        "lastLineLagSeconds": {"p50": lag50, "p99": lag99, "n": len(lags)},
        "errors": errors,
        "clientCpuShare": client_cpu,
        "serverRssKb": {"idle": idle_rss, "peak": peak},
        "underLoad": {"list": listed.figures(), "healthz": health.figures()},
        "idle": {"list": idle_list.figures(), "healthz": idle_health.figures()},
    }
    return fig
