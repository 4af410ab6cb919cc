"""End open streams soon after the credential that opened them stops being valid.

An SSE log follow or a terminal is authenticated once, when it opens, and may then stay open
for days. Revoking a token, signing out, revoking a session, disabling a user or reaching an
expiry must still end it, also when that happened through another replica. So every open
stream registers its credential here; while any are registered, one task per process asks the
database about all of them in one batched query every ``CHECK_INTERVAL`` seconds, with a
short-lived database session (a stream itself never holds one), and sets the ``ended`` event
of every stream whose credential is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Iterator
from typing import Literal

from gentity.server.db.database import Database
from gentity.server.services import credentials
from gentity.server.services.credentials import Credential

log = logging.getLogger(__name__)

StreamKind = Literal["terminal", "logs", "events", "preview"]
"""What an open stream is: a terminal, a log follow, an event follow or a preview WebSocket
(counted in metrics)."""

CHECK_INTERVAL = 2.0
"""Seconds between checks: a revoked credential's streams end within about this long."""


class CredentialWatch:
    """The per-process registry of open streams, keyed by the credential that opened them."""

    def __init__(self, db: Database, interval: float = CHECK_INTERVAL) -> None:
        self._db = db
        self.interval = interval
        self._open: dict[Credential, set[asyncio.Event]] = {}
        self._kinds: Counter[StreamKind] = Counter()
        self._task: asyncio.Task[None] | None = None

    @contextlib.contextmanager
    def watch(self, credential: Credential, kind: StreamKind) -> Iterator[asyncio.Event]:
        """Register a stream for as long as the block runs; the event is set when it must end."""
        ended = asyncio.Event()
        self._open.setdefault(credential, set()).add(ended)
        self._kinds[kind] += 1
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="credential-watch")
        try:
            yield ended
        finally:
            self._kinds[kind] -= 1
            streams = self._open.get(credential)
            if streams is not None:
                streams.discard(ended)
                if not streams:
                    del self._open[credential]

    @property
    def open_streams(self) -> int:
        return sum(len(events) for events in self._open.values())

    def open_of(self, kind: StreamKind) -> int:
        """How many streams of this kind this process has open."""
        return self._kinds[kind]

    async def check_once(self) -> None:
        """Ask about every registered credential at once; end the streams of the dead ones."""
        wanted = list(self._open)
        if not wanted:
            return
        async with self._db.session() as db:
            alive = await credentials.live(db, wanted)
        for credential in wanted:
            if credential not in alive:
                for ended in self._open.get(credential, ()):
                    ended.set()

    async def _run(self) -> None:
        # Runs only while streams are open; the next registration starts it again.
        while self._open:
            await asyncio.sleep(self.interval)
            try:
                await self.check_once()
            except Exception:
                # A database hiccup must not end everyone's streams; the next round retries.
                log.warning("could not re-check the credentials of open streams", exc_info=True)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
