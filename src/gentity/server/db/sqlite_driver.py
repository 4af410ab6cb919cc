"""SQLAlchemy's aiosqlite dialect, with one trip to the driver's thread per statement.

aiosqlite runs every call of a ``sqlite3`` connection in a thread of its own, and SQLAlchemy's
adapter makes a separate call for each cursor step: create the cursor, execute, fetch the rows,
close. Each is a hand-over to that thread and back to the event loop (a future, a wake-up of
the loop, the GIL changing hands), which costs more than the statement itself: a request that
reads its credential and one row paid for about ten of them. This cursor does the four steps in
one call, so a statement is one trip.

Everything else (connections, transactions, errors) is the stock dialect's. Selected by
:class:`~gentity.server.db.database.Database` for SQLite URLs as ``sqlite+gentity_aiosqlite``.
"""

from __future__ import annotations

import collections
import sqlite3
from dataclasses import dataclass
from typing import Any

import aiosqlite
from sqlalchemy.dialects import registry
from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_cursor,
    AsyncAdapt_aiosqlite_dbapi,
    SQLiteDialect_aiosqlite,
)
from sqlalchemy.util import EMPTY_DICT

DRIVER = "gentity_aiosqlite"


@dataclass(frozen=True)
class _Finished:
    """What SQLAlchemy reads from a cursor after its statement ran (which has been closed)."""

    description: Any
    rowcount: int
    lastrowid: int | None
    arraysize: int = 1

    def close(self) -> None:
        """Closed already, in the driver's thread."""


_NOT_RUN = _Finished(description=None, rowcount=-1, lastrowid=None)


def _run(
    connection: aiosqlite.Connection, operation: str, parameters: Any, many: bool
) -> tuple[_Finished, list[Any]]:
    # In aiosqlite's thread: the sqlite3 connection is only ever used there.
    cursor = connection._conn.cursor()
    try:
        if many:
            cursor.executemany(operation, parameters)
        elif parameters is None:
            cursor.execute(operation)
        else:
            cursor.execute(operation, parameters)
        rows = cursor.fetchall() if cursor.description else []
        return _Finished(cursor.description, cursor.rowcount, cursor.lastrowid), rows
    finally:
        cursor.close()


class _OneTripCursor(AsyncAdapt_aiosqlite_cursor):
    __slots__ = ()
    # Its results are fetched and its sqlite3 cursor closed when the statement runs.
    _awaitable_cursor_close = False

    def __init__(self, adapt_connection: AsyncAdapt_aiosqlite_connection) -> None:
        # Not the base's: that one opens an aiosqlite cursor, a trip of its own.
        self._adapt_connection = adapt_connection
        self._connection = adapt_connection._connection
        self._cursor = _NOT_RUN  # type: ignore[assignment]
        self._soft_closed_memoized = EMPTY_DICT
        self._rows = collections.deque()

    async def _execute_async(self, operation: Any, parameters: Any) -> Any:
        await self._trip(operation, parameters, many=False)

    async def _executemany_async(self, operation: Any, seq_of_parameters: Any) -> Any:
        await self._trip(operation, seq_of_parameters, many=True)

    async def _trip(self, operation: str, parameters: Any, *, many: bool) -> None:
        connection: aiosqlite.Connection = self._connection  # type: ignore[assignment]
        async with self._adapt_connection._execute_mutex:
            finished, rows = await connection._execute(  # type: ignore[no-untyped-call]
                _run, connection, operation, parameters, many
            )
        self._cursor = finished
        self._rows = collections.deque(rows)


class _Connection(AsyncAdapt_aiosqlite_connection):
    __slots__ = ()
    _cursor_cls = _OneTripCursor  # type: ignore[assignment]  # a subclass, as the base's


class _Dbapi(AsyncAdapt_aiosqlite_dbapi):
    def connect(self, *arg: Any, **kw: Any) -> _Connection:
        stock = super().connect(*arg, **kw)
        return _Connection(self, stock._connection)


class Dialect(SQLiteDialect_aiosqlite):
    driver = DRIVER
    # Statements compile as the stock dialect's do; caching them is as safe.
    supports_statement_cache = True

    @classmethod
    def import_dbapi(cls) -> _Dbapi:
        return _Dbapi(aiosqlite, sqlite3)


registry.register(f"sqlite.{DRIVER}", __name__, "Dialect")
