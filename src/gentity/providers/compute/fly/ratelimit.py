"""Client-side pacing to the Machines API's published limits, so that 429s stay rare.

1 request/s with bursts of 3 per action per machine (or per app for app-wide calls); reading a
machine 5/s with bursts of 10. A caller over the limit waits for its turn instead of failing.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass


@dataclass
class _Bucket:
    rate: float
    burst: float
    tokens: float
    updated: float


class Pacer:
    """Token buckets keyed by action and machine (or app)."""

    def __init__(self) -> None:
        self._buckets: dict[str, _Bucket] = {}
        self._lock = asyncio.Lock()

    async def turn(self, key: str, rate: float = 1.0, burst: float = 3.0) -> None:
        """Return when a request under ``key`` may be sent."""
        async with self._lock:
            now = time.monotonic()
            bucket = self._buckets.setdefault(key, _Bucket(rate, burst, burst, now))
            bucket.tokens = min(bucket.burst, bucket.tokens + (now - bucket.updated) * rate)
            bucket.updated = now
            # Take the token now (possibly going negative) so later callers queue behind.
            bucket.tokens -= 1
            delay = 0.0 if bucket.tokens >= 0 else -bucket.tokens / rate
        if delay:
            await asyncio.sleep(delay)
