"""``python -m bench [--quick] [--json PATH] [--only N,…]``: run the benchmark, print the table.

Starts a real ``gentity serve`` on a free port with a fresh data directory, runs the figures,
and cleans everything up (instances, server, directories), also on Ctrl-C or failure.
Exit status: 0 when every figure was measured (goals met or not), 1 when one could not be,
130 when interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
import traceback
from collections.abc import Awaitable, Callable
from pathlib import Path

from bench import (
    api,
    concurrent_creates,
    idle_cost,
    keystrokes,
    load,
    logtail,
    memory,
    scale,
    session_start,
    startup,
    throughput,
)
from bench.context import Context, Plan, say
from bench.report import Figure, Report
from bench.server import BenchServer

FIGURES: list[tuple[str, Callable[[Context], Awaitable[Figure]], str]] = [
    ("1", startup.run, "Time to first echoed command"),
    ("2", keystrokes.run, "Keystroke round trip"),
    ("3", throughput.run, "Terminal output throughput"),
    ("4", logtail.run, "Log tail (lines=1000)"),
    ("5", memory.run, "Idle guest daemon RSS"),
    ("6", load.run, "Load: log followers and terminals"),
    ("7", api.run_sqlite, "Authenticated API rps, SQLite"),
    ("8", api.run_postgres, "Authenticated API rps, PostgreSQL"),
    ("9", session_start.run, "Terminal session start"),
    ("10", concurrent_creates.run, "Concurrent creates"),
    ("11", idle_cost.run, "Idle instances: CPU and guest memory"),
    ("12", scale.run, "Scale on PostgreSQL: 10,000 instances of 1,000 users"),
]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: fewer iterations, a 100 MB big log"
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the figures here")
    parser.add_argument(
        "--only", metavar="N,…", help="run only these figures (1-12, comma separated)"
    )
    parser.add_argument(
        "--data-parent",
        metavar="DIR",
        help="where to create the temporary data directory (default: the system temp dir)",
    )
    return parser.parse_args(argv)


async def run_figures(args: argparse.Namespace, report: Report) -> None:
    plan = Plan.smoke() if args.quick else Plan.full()
    wanted = set(args.only.split(",")) if args.only else {key for key, _, _ in FIGURES}
    server = BenchServer(args.data_parent)
    say(f"Starting gentity serve on {server.url}, data directory {server.data_dir} …")
    async with server:
        ctx = Context(server, report, plan)
        for key, figure, title in FIGURES:
            if key not in wanted:
                continue
            try:
                await figure(ctx)
            except Exception as exc:
                traceback.print_exc()
                failed = next((f for f in report.figures if f.number == key), None)
                if failed is None:
                    failed = report.add(Figure(key, f"figure-{key}", title, goal="?"))
                failed.passed = None
                failed.notes.append(f"could not be measured: {type(exc).__name__}: {exc}")
                say(f"    figure {key} failed: {exc}\n    server log tail:\n{server.log_tail(15)}")
        for line in server.log_problems():
            if " WARNING " in line and "cgroup" in line:
                continue  # the host's cgroup set-up, not a fault
            report.problem(f"server log: {line[:300]}")
        say("Cleaning up …")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    report = Report(quick=args.quick)
    started = time.monotonic()
    status = 0

    async def guarded() -> None:
        task = asyncio.current_task()
        assert task is not None
        # SIGTERM gets the same clean-up as Ctrl-C: cancel, let the finally blocks run.
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        await run_figures(args, report)

    try:
        asyncio.run(guarded())
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("\nInterrupted; everything started was cleaned up.", file=sys.stderr)
        status = 130
    except Exception:
        traceback.print_exc()
        status = 1
    report.duration = time.monotonic() - started
    if report.figures:
        report.print_summary()
    if args.json is not None:
        report.write_json(args.json)
        print(f"Figures written to {args.json}")
    if status == 0 and any(f.passed is None for f in report.figures):
        status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
