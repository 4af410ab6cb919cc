"""A token bucket that keeps a client under a provider's published request rate."""

from __future__ import annotations

import asyncio
import time


class TokenBucket:
    """``rate`` requests a second on average, with bursts of up to ``burst``.

    Over any window of ``w`` seconds at most ``burst + rate * w`` requests pass, so a provider's
    limit of ``n`` per window ``w`` holds when ``burst + rate * w <= n``.
    """

    def __init__(self, rate: float, burst: int) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("a token bucket needs a positive rate and a burst of at least 1")
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._updated = time.monotonic()
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        """Wait until a request may be sent. Waiters are served in order."""
        async with self._lock:
            now = time.monotonic()
            self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
            self._updated = now
            if self._tokens < 1:
                # Sleeping under the lock keeps later callers queued behind this one.
                await asyncio.sleep((1 - self._tokens) / self.rate)
                self._tokens = 1.0
                self._updated = time.monotonic()
            self._tokens -= 1
