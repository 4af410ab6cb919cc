"""Log fan-out to many followers: woken a slice at a time, in order, coalescing when behind.

The feed is driven directly (its guest stream is not started): what is checked is how a batch
reaches a thousand followers, not how it is read.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gentity.guest.client import GuestEndpoint
from gentity.server.services import logfeed


async def _no_start(self: logfeed.Feed) -> None:
    self._start_end = 0
    self._complete = True


def publish(feed: logfeed.Feed, *records: tuple[int, bytes]) -> None:
    feed._unpublished.extend(records)
    feed._flush()


async def turn() -> None:
    """Let the event loop run one turn (what was scheduled with call_soon runs)."""
    await asyncio.sleep(0)


def test_followers_are_woken_a_slice_per_turn_and_catch_up_in_one_write(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(logfeed.Feed, "_start", _no_start)
    monkeypatch.setattr(logfeed, "FANOUT_SLICE", 10)

    async def scenario() -> dict[str, Any]:
        feed = logfeed.Feed(logfeed.Feeds(), "i-1", logfeed.Source(GuestEndpoint("x"), "s"))
        await feed.started
        followers = [await feed.subscribe(None, 1) for _ in range(35)]
        for follower in followers:
            assert follower.take() is None  # an empty log: nothing to start with
        publish(feed, (10, b"a"))
        woken = [sum(f.wake.is_set() for f in followers)]
        await turn()
        woken.append(sum(f.wake.is_set() for f in followers))
        # A second batch before everyone was woken: it joins the first in their queues.
        publish(feed, (20, b"b"))
        for _ in range(6):
            await turn()
            woken.append(sum(f.wake.is_set() for f in followers))
        taken = [f.take() for f in followers]
        feed.close()
        return {"woken": woken, "taken": taken}

    result = asyncio.run(scenario())
    woken = result["woken"]
    assert woken[0] == 10  # the first slice at once
    assert woken[1] == 20  # one more slice per turn of the loop, not all 35 at once
    assert woken[-1] == 35
    taken = result["taken"]
    # Every follower gets both records, in order, as one piece.
    assert taken == [b"ab"] * 35
