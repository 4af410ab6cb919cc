"""A version number that moves on every agent or install state change, and waiting for it.

Health reports the version; the ``wait`` op answers as soon as it differs from the one the
caller saw, so the control plane learns of a change without polling. Standard library only.
"""

from __future__ import annotations

import asyncio
import contextlib
import time


class Changes:
    """The current version and an event per version for whoever waits for the next one."""

    def __init__(self) -> None:
        # Starts at the boot time in milliseconds, so a guest that restarted (a machine
        # restart) does not hand out the versions its predecessor did.
        self.version = int(time.time() * 1000)
        self._next = asyncio.Event()

    def bump(self) -> None:
        """A state changed: move the version and wake every waiter."""
        self.version += 1
        self._next.set()
        self._next = asyncio.Event()

    async def next(self) -> None:
        """Until the next :meth:`bump`."""
        await self._next.wait()

    async def since(self, version: object, seconds: float) -> None:
        """Until the version differs from ``version``, or ``seconds`` have passed."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                while self.version == version:
                    await self._next.wait()
