"""One reader per followed instance, shared by all its followers (``logs?follow=1``).

A :class:`Feed` holds the only follow stream this server process has open to an instance's
guest. The first follower starts it; it closes :data:`LINGER_SECONDS` after the last one
leaves, or when the guest's stream ends (the instance stopped or went away), which ends every
follower, as a stream of its own would have. Each record is turned into its SSE frame once,
and the frames the guest sent together make one :class:`Batch` that every follower queues by
reference; a follower writes whatever it has queued in one piece when it gets a turn.

Cursors are byte offsets in the guest's log (see ``guest/logreader.py``), increasing along the
file, so a follower joins without a gap or a repeat: the feed keeps its last
:data:`RING_RECORDS` records, and a follower that resumes after a cursor among them (or wants
no more recent lines than they hold) starts from there. Any other follower first reads what it
asked for from a stream of its own, which it closes as soon as that reaches the records the
feed holds; from then on it drops the feed's records at or before the last one it sent.

The ring and every batch are bounded in bytes too (:data:`RING_BYTES`, :data:`BATCH_BYTES`):
records are the instance's to write. A follower that falls more than :data:`MAX_BACKLOG_BYTES`
behind is ended: its stream closes cleanly and the client reconnects with the id of the last
record it got (the SDK and browsers do so by themselves), which it then resumes after. No
follower ever slows the feed or another follower down.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field

from gentity.guest import client as guest_client
from gentity.guest.client import GuestEndpoint

log = logging.getLogger(__name__)

#: Recent records a feed keeps for followers that join or resume, and at most how many bytes
#: of them (records are the instance's to write: a thousand huge ones must not cost a GB).
RING_RECORDS = 1000
RING_BYTES = 4 * 1024 * 1024
#: A batch goes out at once when it reaches this size, whatever the delay between batches.
BATCH_BYTES = 1024 * 1024
#: How far (in SSE bytes) a follower may fall behind the feed before it is ended.
MAX_BACKLOG_BYTES = 1024 * 1024
#: How long a feed stays open after its last follower left (a reconnect finds it still there).
LINGER_SECONDS = 2.0
#: Batches go out at most this long apart when the feed has many followers (see
#: ``Feed._flush_delay``): the delay a record may wait for others to share its batch.
FLUSH_DELAY_MAX = 0.1
FLUSH_DELAY_PER_FOLLOWER = 0.0001
#: How many followers a batch is handed to in one turn of the event loop. Each one handed a
#: batch writes it in the next turn, so a thousand at once would be a turn of tens of ms that
#: every request in flight waits behind; between two slices, everything else gets its turn.
FANOUT_SLICE = 100


def frame(cursor: str, record: dict[str, str]) -> bytes:
    """A record's SSE event; its id is its cursor."""
    data = json.dumps(record, separators=(",", ":"))
    return f"id: {cursor}\ndata: {data}\n\n".encode()


@dataclass(frozen=True, slots=True)
class Batch:
    """Records the guest sent together: ``(cursor, frame)`` each, and all frames joined."""

    generation: int
    """Bumped when the log was truncated or replaced (its cursors start over)."""
    records: list[tuple[int, bytes]]
    data: bytes


@dataclass(frozen=True)
class Source:
    """Where a feed reads from: the instance's guest and the secret it answers to."""

    endpoint: GuestEndpoint
    secret: str = field(repr=False)


class Follower:
    """One follower's place in a feed: the batches it has not written yet.

    :meth:`take` hands out everything pending as one piece of bytes; ``wake`` is set whenever
    there is something new (or the follower was ended: then ``finished`` is true).
    """

    def __init__(self, feed: Feed) -> None:
        self.feed = feed
        self.wake = asyncio.Event()
        self.finished = False
        self.overflowed = False
        self._pending: deque[Batch] = deque()
        self._backlog = 0
        # Catch-up: frames to write before any of the feed's batches, and until ``_joined``
        # the feed's batches are only queued.
        self._early: list[bytes] = []
        self._early_bytes = 0
        self._drained = asyncio.Event()
        self._joined = True
        self._skip: tuple[int, int] | None = None
        """(generation, cursor): the feed's records at or before it were already written."""
        self._catching_up: asyncio.Task[None] | None = None

    def begin(self, frames: list[bytes], skip: tuple[int, int] | None = None) -> None:
        """Start with ``frames``, then the feed's records (after ``skip``'s cursor)."""
        self._early = frames
        self._skip = skip

    def push(self, batch: Batch) -> bool:
        """Queue ``batch``; whether the follower is to be woken (the feed wakes it)."""
        if self.finished:
            return False
        if self._backlog > MAX_BACKLOG_BYTES:
            # Too far behind: end it rather than hold ever more for it.
            self.overflowed = True
            self.finish()
            return False
        self._pending.append(batch)
        self._backlog += len(batch.data)
        return True

    def finish(self, *, drop: bool = True) -> None:
        """End this follower: its stream closes, after what it holds unless ``drop``."""
        self.finished = True
        if drop:
            self._pending.clear()
            self._early.clear()
        self.wake.set()

    def take(self) -> bytes | None:
        """All frames due now, in order, as one piece; None when there are none."""
        if self._early:
            data = b"".join(self._early)
            self._early.clear()
            self._early_bytes = 0
            self._drained.set()
            return data
        if not self._joined or not self._pending:
            return None
        parts: list[bytes] = []
        while self._pending:
            batch = self._pending.popleft()
            if self._skip is None:
                parts.append(batch.data)
                continue
            generation, upto = self._skip
            if batch.generation != generation or batch.records[0][0] > upto:
                self._skip = None
                parts.append(batch.data)
            elif batch.records[-1][0] > upto:
                self._skip = None
                parts.append(b"".join(f for c, f in batch.records if c > upto))
            # else: every record of it was written already
        self._backlog = 0
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def close(self) -> None:
        """The follower went away (or ended): leave the feed."""
        self.finished = True
        if self._catching_up is not None:
            self._catching_up.cancel()
        self.feed.leave(self)

    # --- catch-up -------------------------------------------------------------------------

    def start_catch_up(
        self,
        stream: AsyncGenerator[tuple[str, dict[str, str]]],
        join_at: int,
        snapshot: list[tuple[int, bytes]],
        generation: int,
    ) -> None:
        self._joined = False
        self._catching_up = asyncio.create_task(
            self._catch_up(stream, join_at, snapshot, generation)
        )

    async def _catch_up(
        self,
        stream: AsyncGenerator[tuple[str, dict[str, str]]],
        join_at: int,
        snapshot: list[tuple[int, bytes]],
        generation: int,
    ) -> None:
        """Write the records of a stream of its own until they reach ``join_at``, the first
        record the feed still holds for this follower; then the feed's records after them."""
        try:
            async for cursor, record in stream:
                if self.finished:
                    return
                position = int(cursor)
                item = frame(cursor, record)
                self._early.append(item)
                self._early_bytes += len(item)
                self.wake.set()
                if position >= join_at and self.feed.generation == generation:
                    self._early.extend(f for c, f in snapshot if c > position)
                    self._skip = (generation, position)
                    self._joined = True
                    self.wake.set()
                    return
                if self.feed.generation != generation:
                    break  # the log was replaced meanwhile: start again from the client's end
                while self._early_bytes > MAX_BACKLOG_BYTES and not self.finished:
                    # A slow client holds its own catch-up back, nobody else's.
                    self._drained.clear()
                    await self._drained.wait()
            self.finish()  # the guest went away before it caught up
        except (guest_client.GuestError, ValueError):
            self.finish()
        finally:
            await stream.aclose()


class Feed:
    """The follow stream of one instance's guest and the followers it fans out to."""

    def __init__(self, feeds: Feeds, key: str, source: Source) -> None:
        self.feeds = feeds
        self.key = key
        self.source = source
        self.followers: set[Follower] = set()
        self.generation = 0
        self.ended = False
        self._ring: deque[tuple[int, bytes]] = deque()
        self._last: int | None = None
        """The cursor of the last record published to the followers."""
        self._last_read: int | None = None
        self._unpublished: list[tuple[int, bytes]] = []
        self._unpublished_bytes = 0
        self._ring_bytes = 0
        self._flushed_at = 0.0
        self._flush_at: asyncio.TimerHandle | None = None
        self._start_end = 0
        self._complete = False
        """The ring holds every record of the log (it never dropped one)."""
        self._task: asyncio.Task[None] | None = None
        self._linger: asyncio.TimerHandle | None = None
        self._to_wake: dict[Follower, None] = {}
        """Followers with a batch queued that have not been woken yet, oldest first."""
        self._waking: asyncio.Handle | None = None
        self.started = asyncio.ensure_future(self._start())
        # Retrieved here too, in case every follower that waited for it was cancelled.
        self.started.add_done_callback(lambda f: f.cancelled() or f.exception())

    async def _start(self) -> None:
        try:
            endpoint, secret = self.source.endpoint, self.source.secret
            # Where the log ends now: once the feed has read that far, its ring holds the
            # most recent records and a follower asking for the last few needs nothing else.
            _, end = await guest_client.logs(endpoint, secret, lines=0)
            if not (end.isascii() and end.isdigit()):
                raise guest_client.GuestError("the guest sent an invalid logs answer")
            stream = await guest_client.follow_batches(endpoint, secret, lines=RING_RECORDS)
        except BaseException:
            self.ended = True
            self.feeds.forget(self)
            raise
        self._start_end = int(end)
        self._complete = self._start_end == 0
        self._task = asyncio.create_task(self._run(stream), name=f"log feed {self.key}")
        if not self.followers:
            self._schedule_close()

    @property
    def _position(self) -> int:
        """The cursor after which the feed's stream brings every record."""
        return self._last if self._last is not None else self._start_end

    @property
    def _primed(self) -> bool:
        """The feed has read up to where the log ended when it started."""
        if self.generation > 0 or self._start_end == 0:
            return True
        return self._last is not None and self._last >= self._start_end

    async def _run(self, stream: AsyncGenerator[list[tuple[str, dict[str, str]]]]) -> None:
        loop = asyncio.get_running_loop()
        try:
            async for items in stream:
                for cursor, record in items:
                    position = int(cursor)
                    if self._last_read is not None and position <= self._last_read:
                        # Truncated or replaced: the guest starts over at its beginning.
                        self._flush()
                        self._restart()
                    item = frame(cursor, record)
                    self._unpublished.append((position, item))
                    self._unpublished_bytes += len(item)
                    self._last_read = position
                if self._unpublished_bytes >= BATCH_BYTES:
                    self._flush()
                elif self._flush_at is None:
                    # Right away when the feed was quiet; otherwise once the delay since the
                    # last batch is over, with all that came meanwhile.
                    due = self._flushed_at + self._flush_delay()
                    if due <= loop.time():
                        self._flush()
                    else:
                        self._flush_at = loop.call_at(due, self._flush)
        except guest_client.GuestError as exc:
            log.warning("log feed of instance %s failed: %s", self.key, exc)
        finally:
            self.ended = True
            self.feeds.forget(self)
            self._flush()
            self._wake(everyone=True)
            for follower in tuple(self.followers):
                follower.finish(drop=False)
            with contextlib.suppress(Exception):
                await stream.aclose()

    def _flush_delay(self) -> float:
        # A batch costs every follower a write: with many followers, batches are fewer and
        # larger (at most FLUSH_DELAY_MAX apart); with a few, records go out as they come.
        return min(FLUSH_DELAY_MAX, FLUSH_DELAY_PER_FOLLOWER * len(self.followers))

    def _restart(self) -> None:
        self.generation += 1
        self._ring.clear()
        self._ring_bytes = 0
        self._complete = True

    def _flush(self) -> None:
        """Publish what was read since the last batch to every follower, as one batch."""
        if self._flush_at is not None:
            self._flush_at.cancel()
            self._flush_at = None
        records, self._unpublished = self._unpublished, []
        self._unpublished_bytes = 0
        self._flushed_at = asyncio.get_running_loop().time()
        if not records:
            return
        self._last = records[-1][0]
        batch = Batch(self.generation, records, b"".join(f for _, f in records))
        ring = self._ring
        ring.extend(records)
        self._ring_bytes += len(batch.data)
        while len(ring) > RING_RECORDS or self._ring_bytes > RING_BYTES:
            self._ring_bytes -= len(ring.popleft()[1])
            self._complete = False
        to_wake = self._to_wake
        for follower in self.followers:
            if follower.push(batch):
                to_wake[follower] = None
        if self._waking is None:
            self._wake()

    def _wake(self, *, everyone: bool = False) -> None:
        """Wake the next FANOUT_SLICE followers that have batches queued (all with
        ``everyone``); the next slice in the next turn of the loop. A follower still waiting
        for its turn when the next batch comes writes both at once: when the server is busy,
        followers get fewer, larger writes rather than falling behind."""
        if self._waking is not None:
            self._waking.cancel()
            self._waking = None
        to_wake = self._to_wake
        for _ in range(len(to_wake) if everyone else min(FANOUT_SLICE, len(to_wake))):
            follower = next(iter(to_wake))
            del to_wake[follower]
            follower.wake.set()
        if to_wake:
            self._waking = asyncio.get_running_loop().call_soon(self._wake)

    async def subscribe(self, cursor: int | None, lines: int) -> Follower:
        """A new follower: after ``cursor``, or else the last ``lines`` records first."""
        follower = Follower(self)
        if self.ended:  # its guest went away just now: the follower ends at once, as it would
            follower.finish()
            return follower
        self.followers.add(follower)
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        # No await until the follower knows where it stands in the feed.
        snapshot = list(self._ring)
        position = self._position
        join_at = snapshot[0][0] if snapshot else position
        if cursor is not None and join_at <= cursor <= position:
            follower.begin([f for c, f in snapshot if c > cursor], (self.generation, cursor))
            return follower
        if cursor is None and self._primed and (len(snapshot) >= lines or self._complete):
            follower.begin([f for _, f in snapshot[-lines:]])
            return follower
        generation = self.generation
        try:
            stream = await guest_client.follow(
                self.source.endpoint,
                self.source.secret,
                cursor=None if cursor is None else str(cursor),
                lines=lines if cursor is None else None,
            )
        except BaseException:
            follower.close()
            raise
        follower.start_catch_up(stream, join_at, snapshot, generation)
        return follower

    def leave(self, follower: Follower) -> None:
        self.followers.discard(follower)
        if not self.followers and not self.ended:
            self._schedule_close()

    def _schedule_close(self) -> None:
        if self._linger is None:
            loop = asyncio.get_running_loop()
            self._linger = loop.call_later(LINGER_SECONDS, self._close_if_idle)

    def _close_if_idle(self) -> None:
        self._linger = None
        if not self.followers:
            self.close()

    def close(self) -> None:
        self.ended = True
        self.feeds.forget(self)
        if self._flush_at is not None:
            self._flush_at.cancel()
            self._flush_at = None
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        if self._waking is not None:
            self._waking.cancel()
            self._waking = None
        if self._task is not None:
            self._task.cancel()

    async def wait_closed(self) -> None:
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


class Feeds:
    """The feeds of one server process, by instance."""

    def __init__(self) -> None:
        self._feeds: dict[str, Feed] = {}

    def __len__(self) -> int:
        return len(self._feeds)

    async def follow(self, key: str, source: Source, cursor: int | None, lines: int) -> Follower:
        """Join the instance's feed (starting it if need be): raises GuestError if the guest
        cannot be followed."""
        feed = self._feeds.get(key)
        if feed is None or feed.ended or feed.source.endpoint != source.endpoint:
            # A feed of an earlier machine of the instance ends with that machine's guest.
            feed = self._feeds[key] = Feed(self, key, source)
        await asyncio.shield(feed.started)
        return await feed.subscribe(cursor, lines)

    def forget(self, feed: Feed) -> None:
        if self._feeds.get(feed.key) is feed:
            del self._feeds[feed.key]

    async def close(self) -> None:
        feeds = list(self._feeds.values())
        for feed in feeds:
            feed.close()
        for feed in feeds:
            await feed.wait_closed()
