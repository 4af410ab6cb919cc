"""Figures, problems noticed on the way, the final table and the ``--json`` file."""

from __future__ import annotations

import json
import math
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Figure:
    """One benchmark figure: what was measured, against what, and whether it met its goal."""

    number: str
    """The figure's number in the benchmark (1-8)."""
    key: str
    title: str
    goal: str
    measured: str = "n/a"
    baseline: str = "n/a"
    comparison: str = "n/a"
    passed: bool | None = None
    """True/False once measured; None when the figure could not be measured."""
    data: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        if self.passed is None:
            return "ERROR"
        return "PASS" if self.passed else "MISS"


@dataclass
class Report:
    quick: bool
    started: float = field(default_factory=time.time)
    figures: list[Figure] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    """Things that looked wrong in the server while benchmarking (not goal misses)."""
    duration: float = 0.0

    def add(self, figure: Figure) -> Figure:
        self.figures.append(figure)
        return figure

    def problem(self, text: str) -> None:
        if text not in self.problems:
            self.problems.append(text)
            print(f"  !! problem: {text}", flush=True)

    # --- output ---------------------------------------------------------------------------

    def table(self) -> str:
        header = ("#", "figure", "measured", "baseline (same run)", "ratio / added", "goal", "")
        rows = [header]
        for fig in self.figures:
            rows.append(
                (
                    fig.number,
                    fig.title,
                    fig.measured,
                    fig.baseline,
                    fig.comparison,
                    fig.goal,
                    fig.verdict,
                )
            )
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        rule = "-+-".join("-" * w for w in widths)
        lines = []
        for index, row in enumerate(rows):
            lines.append(" | ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))
            if index == 0:
                lines.append(rule)
        return "\n".join(line.rstrip() for line in lines)

    def print_summary(self) -> None:
        print()
        print("=" * 20, "Gentity benchmark", "(quick)" if self.quick else "", "=" * 20)
        print(self.environment_line())
        print()
        print(self.table())
        notes = [(f.number, note) for f in self.figures for note in f.notes]
        if notes:
            print()
            print("Notes:")
            for number, note in notes:
                print(f"  [{number}] {note}")
        print()
        if self.problems:
            print("Problems noticed in the server:")
            for problem in self.problems:
                print(f"  - {problem}")
        else:
            print("Problems noticed in the server: none")
        print(f"\nTotal time: {self.duration:.1f} s")

    @staticmethod
    def environment_line() -> str:
        load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
        return (
            f"host: {platform.node()}, {os.cpu_count()} CPUs, Linux {platform.release()}, "
            f"Python {platform.python_version()}; load average at the end: {load}"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.started)),
            "durationSeconds": round(self.duration, 1),
            "quick": self.quick,
            "environment": {
                "cpus": os.cpu_count(),
                "kernel": platform.release(),
                "python": sys.version.split()[0],
                "loadAverage": os.getloadavg(),
            },
            "figures": [
                {**asdict(f), "verdict": f.verdict, "data": _clean(f.data)} for f in self.figures
            ],
            "problems": self.problems,
        }

    def write_json(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json(), indent=2) + "\n")


def _clean(value: Any) -> Any:
    """JSON has no NaN: turn them into null, recursively."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value
