"""What every figure gets: the server, the plan (iteration counts), the report, scratch space."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from bench.report import Report
from bench.server import BenchServer


@dataclass(frozen=True)
class Plan:
    """Iteration counts and sizes; ``quick()`` is a smoke run."""

    quick: bool = False
    startup_runs: int = 30
    keystrokes: int = 1000
    clear_every: int = 50
    throughput_bytes: int = 20_000_000
    throughput_runs: int = 3
    log_small_bytes: int = 1_000_000
    log_big_bytes: int = 1_000_000_000
    log_calls: int = 20
    idle_seconds: float = 2.0
    load_followers: int = 1000
    load_terminals: int = 100
    load_seconds: float = 5.0
    idle_instances: int = 200
    idle_window: float = 60.0

    @classmethod
    def full(cls) -> Plan:
        return cls()

    @classmethod
    def smoke(cls) -> Plan:
        return cls(
            quick=True,
            startup_runs=5,
            keystrokes=200,
            throughput_bytes=5_000_000,
            throughput_runs=1,
            log_big_bytes=100_000_000,
            log_calls=5,
            load_followers=100,
            load_terminals=10,
            load_seconds=2.0,
            idle_instances=20,
            idle_window=10.0,
        )


class Context:
    def __init__(self, server: BenchServer, report: Report, plan: Plan) -> None:
        self.server = server
        self.report = report
        self.plan = plan
        self.scratch = server.data_dir / "bench-scratch"
        self.scratch.mkdir(mode=0o700, exist_ok=True)
        self._work: str | None = None

    async def work_instance(self) -> str:
        """One long-lived shell instance shared by the keystroke and throughput figures."""
        if self._work is None:
            self._work = await self.server.create_shell()
        return self._work

    def fresh_home(self) -> Path:
        """An empty directory, like a new instance's volume (the baseline bash's HOME)."""
        return Path(tempfile.mkdtemp(prefix="home-", dir=self.scratch))


def say(text: str) -> None:
    print(text, flush=True)
