"""The iterators ``follow_logs`` returns: log records, plus the cursor to resume from."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Generator, Iterator
from types import TracebackType

from gentity import models
from gentity.client.base import FollowState


class LogStream(Iterator[models.LogLine]):
    """Followed log records. :attr:`last_event_id` is the server's id of the last record
    handed out: pass it as ``follow_logs(..., last_event_id=...)`` to continue later.

    Closing it (``close()``, a ``with`` block, or just dropping it) closes the connection.
    """

    def __init__(self, records: Generator[models.LogLine, None, None], state: FollowState):
        self._records = records
        self._state = state

    @property
    def last_event_id(self) -> str | None:
        return self._state.cursor

    def __next__(self) -> models.LogLine:
        return next(self._records)

    def close(self) -> None:
        self._records.close()

    def __enter__(self) -> LogStream:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class AsyncLogStream(AsyncIterator[models.LogLine]):
    """The asyncio :class:`LogStream`: ``async for``, ``aclose()``, ``async with``."""

    def __init__(self, records: AsyncGenerator[models.LogLine, None], state: FollowState) -> None:
        self._records = records
        self._state = state

    @property
    def last_event_id(self) -> str | None:
        return self._state.cursor

    async def __anext__(self) -> models.LogLine:
        return await self._records.__anext__()

    async def aclose(self) -> None:
        await self._records.aclose()

    async def __aenter__(self) -> AsyncLogStream:
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
