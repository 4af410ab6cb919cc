"""Waiting for a condition instead of sleeping for a guessed time.

A fixed sleep is either too short on a loaded machine (a flaky failure) or longer than needed
everywhere else; polling the condition itself is neither, and on timeout says what it awaited.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

POLL_INTERVAL = 0.02


async def wait_until(predicate: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    """Poll ``predicate`` from the event loop until it holds; fail naming ``what`` if it never does.

    The loop keeps running between polls, so tasks that should make the condition true can.
    """
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting until {what}")
        await asyncio.sleep(POLL_INTERVAL)


def wait_until_blocking(predicate: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    """:func:`wait_until` for synchronous tests: blocks the calling thread between polls."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting until {what}")
        time.sleep(POLL_INTERVAL)
