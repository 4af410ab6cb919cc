"""The iterators ``follow_logs`` and ``follow_events`` return: records, plus the cursor to
resume from."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Generator, Iterator
from types import TracebackType
from typing import Generic, TypeVar

from gentity import models
from gentity.client.base import FollowState

R = TypeVar("R")


class FollowStream(Iterator[R], Generic[R]):
    """Followed records. :attr:`last_event_id` is the server's id of the last record handed
    out: pass it as ``last_event_id=...`` to the same follow call to continue later.

    Closing it (``close()``, a ``with`` block, or just dropping it) closes the connection.
    """

    def __init__(self, records: Generator[R, None, None], state: FollowState[R]) -> None:
        self._records = records
        self._state = state

    @property
    def last_event_id(self) -> str | None:
        return self._state.cursor

    def __next__(self) -> R:
        return next(self._records)

    def close(self) -> None:
        self._records.close()

    def __enter__(self) -> FollowStream[R]:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class AsyncFollowStream(AsyncIterator[R], Generic[R]):
    """The asyncio :class:`FollowStream`: ``async for``, ``aclose()``, ``async with``."""

    def __init__(self, records: AsyncGenerator[R, None], state: FollowState[R]) -> None:
        self._records = records
        self._state = state

    @property
    def last_event_id(self) -> str | None:
        return self._state.cursor

    async def __anext__(self) -> R:
        return await self._records.__anext__()

    async def aclose(self) -> None:
        await self._records.aclose()

    async def __aenter__(self) -> AsyncFollowStream[R]:
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


LogStream = FollowStream[models.LogLine]
AsyncLogStream = AsyncFollowStream[models.LogLine]
EventStream = FollowStream[models.InstanceEvent]
"""Followed status changes of an instance; ends after its ``destroyed`` event."""
AsyncEventStream = AsyncFollowStream[models.InstanceEvent]
