"""Small statistics and formatting helpers (medians and percentiles of noisy samples)."""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(values: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (0-100) with linear interpolation; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100.0
    low = math.floor(rank)
    high = math.ceil(rank)
    if low == high:
        return ordered[low]
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def median(values: Sequence[float]) -> float:
    return percentile(values, 50.0)


def summary(values: Sequence[float], *points: float) -> dict[str, float]:
    """``{"p50": …, "p95": …, "n": …}`` for the requested percentiles."""
    out = {f"p{p:g}": percentile(values, p) for p in points}
    out["n"] = float(len(values))
    return out


def ms(seconds: float) -> str:
    """Seconds as a short millisecond string."""
    if math.isnan(seconds):
        return "n/a"
    value = seconds * 1000.0
    if value < 10:
        return f"{value:.3f} ms"
    if value < 100:
        return f"{value:.2f} ms"
    return f"{value:.1f} ms"


def mib(num_bytes: float) -> str:
    return f"{num_bytes / (1024 * 1024):.1f} MiB"


def rate(bytes_per_second: float) -> str:
    return f"{bytes_per_second / 1e6:.1f} MB/s"


def size(num_bytes: float) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if num_bytes >= scale:
            return f"{num_bytes / scale:.1f} {unit}"
    return f"{num_bytes:.0f} B"


def ratio(a: float, b: float) -> float:
    return a / b if b else math.nan
