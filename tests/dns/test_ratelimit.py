"""The token bucket keeps a client under a request rate, bursts included."""

from __future__ import annotations

import time

import anyio
import pytest

from gentity.providers.dns.cloudflare.client import DEFAULT_BURST, DEFAULT_RATE
from gentity.providers.dns.ratelimit import TokenBucket

pytestmark = pytest.mark.anyio


async def test_a_burst_passes_at_once_then_the_rate_holds() -> None:
    bucket = TokenBucket(rate=4, burst=5)
    started = time.monotonic()
    for _ in range(5):
        await bucket.acquire()
    # Without the burst these five would take a second.
    assert time.monotonic() - started < 0.5
    for _ in range(2):
        await bucket.acquire()
    # Two more at 4 a second take half a second.
    assert 0.45 <= time.monotonic() - started < 3


async def test_concurrent_callers_share_the_rate() -> None:
    bucket = TokenBucket(rate=50, burst=1)
    started = time.monotonic()
    async with anyio.create_task_group() as group:
        for _ in range(21):
            group.start_soon(bucket.acquire)
    # Twenty waits at 50 a second: 0.4 s.
    assert 0.38 <= time.monotonic() - started < 3


def test_the_default_stays_under_cloudflares_limit() -> None:
    # 1,200 requests per 5 minutes per token, shared with anything else using it.
    assert DEFAULT_BURST + DEFAULT_RATE * 300 <= 1200 * 0.95


def test_nonsense_is_refused() -> None:
    with pytest.raises(ValueError):
        TokenBucket(rate=0, burst=5)
    with pytest.raises(ValueError):
        TokenBucket(rate=1, burst=0)
