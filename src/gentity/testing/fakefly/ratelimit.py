"""The published Machines API rate limits, per action per machine (or per app).

1 request/s with bursts of 3 for each action; ``GET`` of a machine 5/s with bursts of 10; app
deletions 100 a minute. Over the limit the fake answers 429 with ``Retry-After``.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass

_MACHINE_PATH = re.compile(r"^/v1/apps/([^/]+)/machines(?:/([^/]+)(?:/([^/]+))?)?/?$")
_APP_PATH = re.compile(r"^/v1/apps/([^/]+)/?$")


@dataclass
class Bucket:
    rate: float
    burst: float
    tokens: float
    updated: float

    def take(self, now: float) -> float:
        """0 when a request may go now, else the seconds until one may."""
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


def limit_for(method: str, path: str) -> tuple[str, float, float] | None:
    """(bucket key, rate per second, burst) for a request, or None when not limited."""
    match = _MACHINE_PATH.match(path)
    if match is not None:
        app, machine, action = match.groups()
        if machine is None:
            return f"{method} machines {app}", 1.0, 3.0
        if method == "GET" and action is None:
            return f"GET machine {app}/{machine}", 5.0, 10.0
        return f"{method} {action or 'machine'} {app}/{machine}", 1.0, 3.0
    if method == "DELETE" and _APP_PATH.match(path):
        return "DELETE app", 100 / 60, 100.0
    return None


class RateLimiter:
    def __init__(self) -> None:
        self._buckets: dict[str, Bucket] = {}

    def retry_after(self, method: str, path: str) -> int:
        """0 if the request may go, else the whole seconds to put in ``Retry-After``."""
        limit = limit_for(method, path)
        if limit is None:
            return 0
        key, rate, burst = limit
        now = time.monotonic()
        bucket = self._buckets.setdefault(key, Bucket(rate, burst, burst, now))
        wait = bucket.take(now)
        return math.ceil(wait) if wait > 0 else 0
