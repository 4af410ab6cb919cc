"""Sessions whose every round trip to the database has a deadline.

A database that refuses connections fails fast by itself; one behind a network partition (or
a stalled proxy) does not: a query sent into a black hole waits for an answer that never comes,
and TCP may take many minutes to notice. Server-side timeouts (PostgreSQL's
``statement_timeout``) cannot help when the server never sees the query. So every awaited call
of a session runs under ``asyncio.timeout``; past it the caller gets
:class:`DatabaseUnavailable` (a 503) and the driver abandons the connection, which the pool
then replaces.

Cancelling a PostgreSQL query costs psycopg up to 10 s more (it first tries to cancel it on the
server), so a request on a black-holed database answers within about the statement timeout
plus 10 s; one on a refusing database within the connect timeout.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

P = ParamSpec("P")
R = TypeVar("R")


class DatabaseUnavailable(Exception):
    """The database did not answer in time, or refused: answered as 503 by the error handlers."""


def _bounded(method: Callable[P, Coroutine[Any, Any, R]]) -> Callable[P, Coroutine[Any, Any, R]]:
    @functools.wraps(method)
    async def call(*args: P.args, **kwargs: P.kwargs) -> R:
        session = args[0]
        if not isinstance(session, BoundedSession):  # only ever installed on BoundedSession
            raise TypeError(f"{method.__name__} of a BoundedSession called on {session!r}")
        try:
            async with asyncio.timeout(session.deadline):
                return await method(*args, **kwargs)
        except TimeoutError as exc:
            raise DatabaseUnavailable(
                f"the database did not answer within {session.deadline:g} s"
            ) from exc

    return call


class BoundedSession(AsyncSession):
    """An :class:`AsyncSession` whose calls fail with :class:`DatabaseUnavailable` past
    ``deadline`` seconds (the statement timeout, which includes waiting for a pooled
    connection and connecting)."""

    def __init__(self, *args: Any, deadline: float = 30.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.deadline = deadline

    execute = _bounded(AsyncSession.execute)
    scalar = _bounded(AsyncSession.scalar)  # type: ignore[assignment]  # same overloads
    scalars = _bounded(AsyncSession.scalars)
    get = _bounded(AsyncSession.get)
    get_one = _bounded(AsyncSession.get_one)
    commit = _bounded(AsyncSession.commit)
    rollback = _bounded(AsyncSession.rollback)
    flush = _bounded(AsyncSession.flush)
    refresh = _bounded(AsyncSession.refresh)
    merge = _bounded(AsyncSession.merge)
    delete = _bounded(AsyncSession.delete)
    connection = _bounded(AsyncSession.connection)
    close = _bounded(AsyncSession.close)
