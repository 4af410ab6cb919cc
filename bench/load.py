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

The followers and terminals run in a process of their own (``python -m bench.load``, driven
over its stdin and stdout): in this one, the API calls would wait for the client's own handling
of a thousand streams, and their latency would be the benchmark's, not the server's. Both
processes' CPU is reported beside the server's (they share the same cores). The followers
speak plain HTTP/1.1 over asyncio streams: a thousand httpx streams would cost the benchmark
more CPU than the server it measures.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench import procs
from bench.context import Context, say
from bench.report import Figure
from bench.stats import mib, ms, percentile
from bench.terminal import Terminal
from gentity.guest.logformat import format_timestamp

GOAL_LAG_P99 = 0.25
GOAL_LIST_P99 = 0.25
GOAL_RSS_MIB = 300
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


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process so far, all its threads (0 if it is gone)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return 0.0


# --- the client process: followers and terminals ----------------------------------------------


async def _line() -> dict[str, Any]:
    line = await asyncio.to_thread(sys.stdin.readline)
    if not line:
        raise SystemExit("the benchmark went away")
    answer: dict[str, Any] = json.loads(line)
    return answer


def _say(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


async def client_main() -> None:
    """Open the streams the first line on stdin asks for, say when they are open, then wait
    for the number of the last marker and report when each follower got it."""
    config = await _line()
    followers = [Follower() for _ in range(config["followers"])]
    failures: list[str] = []
    terminals: list[Terminal] = []
    readers: list[asyncio.Task[None]] = []
    streams: list[asyncio.Task[None]] = []
    try:
        for _ in range(config["terminals"]):
            term = await Terminal.open(config["wsUrl"])
            terminals.append(term)
            await term.send(TERMINAL_LOOP)
            readers.append(asyncio.create_task(keep_reading(term, failures)))
        opened = time.monotonic()
        for start in range(0, len(followers), CONNECT_BATCH):
            batch = followers[start : start + CONNECT_BATCH]
            streams += [
                asyncio.create_task(
                    f.run(config["host"], config["port"], config["path"], config["token"])
                )
                for f in batch
            ]
            async with asyncio.timeout(60):
                await asyncio.gather(*(f.connected.wait() for f in batch))
        _say({"connectSeconds": time.monotonic() - opened})
        last = (await _line())["last"]
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(30):
                while any(last not in f.received and f.error is None for f in followers):
                    await asyncio.sleep(0.05)
        _say(
            {
                "received": [f.received.get(last) for f in followers],
                "errors": [f.error for f in followers],
                "failures": failures,
            }
        )
    finally:
        for task in [*streams, *readers]:
            task.cancel()
        await asyncio.gather(*streams, *readers, return_exceptions=True)
        await asyncio.gather(*(t.close() for t in terminals), return_exceptions=True)


class Client:
    """The client process, seen from the benchmark."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    @classmethod
    async def start(cls) -> Client:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.load",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            cwd=Path(__file__).resolve().parent.parent,
        )
        return cls(process)

    async def tell(self, message: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(message).encode() + b"\n")
        await self.process.stdin.drain()

    async def hear(self, timeout: float) -> dict[str, Any]:
        assert self.process.stdout is not None
        async with asyncio.timeout(timeout):
            line = await self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the client process ended (exit {await self.process.wait()})")
        answer: dict[str, Any] = json.loads(line)
        return answer

    async def close(self) -> None:
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.terminate()
            try:
                async with asyncio.timeout(10):
                    await self.process.wait()
            except TimeoutError:
                self.process.kill()
                await self.process.wait()


async def run(ctx: Context) -> Figure:
    plan = ctx.plan
    followers_n, terminals_n = plan.load_followers, plan.load_terminals
    fig = ctx.report.add(
        Figure(
            "6",
            "load",
            f"Load: {followers_n} log followers + {terminals_n} terminals",
            goal=(
                f"0 errors, lag p99 <= {ms(GOAL_LAG_P99)}, RSS < {GOAL_RSS_MIB} MiB, "
                f"/api/instances and /healthz p99 <= {ms(GOAL_LIST_P99)}"
            ),
        )
    )
    server = ctx.server
    assert server.process is not None
    pid = server.process.pid
    say(f"[6] load: {followers_n} log followers and {terminals_n} terminals on one instance")
    instance_id = await server.create_shell()
    log = server.instance_dir(instance_id) / "disk" / "logs" / "agent.log"
    idle_rss = procs.rss_kb(pid)
    idle_list, idle_health = await measure_api(server.api, plan.load_seconds / 2)
    say(f"    idle: list {idle_list.describe()}; healthz {idle_health.describe()}")

    client = await Client.start()
    try:
        await client.tell(
            {
                "followers": followers_n,
                "terminals": terminals_n,
                "wsUrl": server.ws_url(instance_id),
                "host": "127.0.0.1",
                "port": server.port,
                "path": f"/api/instances/{instance_id}/logs?follow=1&lines=1",
                "token": server.token,
            }
        )
        connected = await client.hear(timeout=60 + 10 * (followers_n // CONNECT_BATCH + 1))
        say(
            f"    {terminals_n} terminals print a line every {ms(MARK_INTERVAL)}; "
            f"{followers_n} followers connected in {connected['connectSeconds']:.1f} s"
        )

        marks = max(2, round(plan.load_seconds / MARK_INTERVAL))
        sent: dict[int, float] = {}
        stop = asyncio.Event()
        rss = asyncio.create_task(peak_rss(pid, stop))
        client_pid = client.process.pid
        guest_pid = procs.find_guest(server.cgroup_name(instance_id)) or 0
        cpu_at = (
            cpu_seconds(pid),
            cpu_seconds(client_pid),
            time.process_time(),
            cpu_seconds(guest_pid),
        )
        window_started = time.monotonic()
        api = asyncio.create_task(measure_api(server.api, plan.load_seconds))
        await write_marks(log, marks, sent)
        listed, health = await api
        window = time.monotonic() - window_started
        cpu = [
            (after - before) / window
            for before, after in zip(
                cpu_at,
                (
                    cpu_seconds(pid),
                    cpu_seconds(client_pid),
                    time.process_time(),
                    cpu_seconds(guest_pid),
                ),
                strict=True,
            )
        ]
        say(f"    {marks} lines written; waiting for the followers to get the last one")
        last = marks - 1
        await client.tell({"last": last})
        result = await client.hear(timeout=60)
        stop.set()
        peak = await rss
    finally:
        say("    closing the streams")
        await client.close()
        await server.delete(instance_id)

    received: list[float | None] = result["received"]
    lags = [at - sent[last] for at in received if at is not None]
    failed = [
        error or "never got the last line"
        for at, error in zip(received, result["errors"], strict=True)
        if at is None
    ]
    failures: list[str] = result["failures"]
    errors = len(failed) + len(failures) + listed.errors + health.errors
    lag50, lag99 = percentile(lags, 50), percentile(lags, 99)
    list99, health99 = percentile(listed.latencies, 99), percentile(health.latencies, 99)
    peak_mib = peak / 1024
    verdicts = {
        "errors": errors == 0,
        "lag p99": lag99 <= GOAL_LAG_P99,
        "RSS": peak_mib < GOAL_RSS_MIB,
        "/api/instances p99": list99 <= GOAL_LIST_P99,
        "/healthz p99": health99 <= GOAL_LIST_P99,
    }
    fig.measured = (
        f"lag p50 {ms(lag50)}, p99 {ms(lag99)}; /api/instances {listed.describe()}; "
        f"{errors} errors; server RSS {mib(peak * 1024)}"
    )
    fig.baseline = f"/healthz {health.describe()}"
    fig.comparison = f"list p99 x{list99 / health99:.1f} healthz p99"
    fig.passed = all(verdicts.values())
    fig.notes.append(
        ", ".join(f"{name} {'PASS' if ok else 'MISS'}" for name, ok in verdicts.items())
    )
    fig.notes.append(
        f"before the streams: /api/instances {idle_list.describe()}, "
        f"/healthz {idle_health.describe()}; server RSS {mib(idle_rss * 1024)}"
    )
    fig.notes.append(
        f"CPU under the load: server {cpu[0]:.0%} of a CPU, the instance's guest {cpu[3]:.0%}, "
        f"the followers' and terminals' process {cpu[1]:.0%}, the benchmark's own (API calls, "
        f"log writes) {cpu[2]:.0%}"
    )
    for problem in sorted(set(failed + failures))[:5]:
        fig.notes.append(f"error: {problem}")
    fig.data = {
        "followers": followers_n,
        "terminals": terminals_n,
        "lastLineLagSeconds": {"p50": lag50, "p99": lag99, "n": len(lags)},
        "errors": errors,
        "cpuShare": {"server": cpu[0], "guest": cpu[3], "client": cpu[1], "benchmark": cpu[2]},
        "serverRssKb": {"idle": idle_rss, "peak": peak},
        "underLoad": {"list": listed.figures(), "healthz": health.figures()},
        "idle": {"list": idle_list.figures(), "healthz": idle_health.figures()},
        "verdicts": verdicts,
    }
    return fig


if __name__ == "__main__":
    asyncio.run(client_main())
