"""SQLAlchemy's aiosqlite dialect, with one trip to the driver's thread per statement.

aiosqlite runs every call of a ``sqlite3`` connection in a thread of its own, and SQLAlchemy's
adapter makes a separate call for each cursor step: create the cursor, execute, fetch the rows,
close. Each is a hand-over to that thread and back to the event loop (a future, a wake-up of
the loop, the GIL changing hands), which costs more than the statement itself: a request that
reads its credential and one row paid for about ten of them. This cursor does the four steps in
one call, so a statement is one trip.

Reads make no trip at all: a ``SELECT`` runs on the event loop's thread. In WAL mode a read
never waits for the writer, and it takes microseconds, far less than the hand-over. It runs with
the busy timeout at zero, so should SQLite answer "busy" (a WAL recovery by another process),
it goes to the driver's thread instead and waits there, as writes always do: waiting for the
write lock (``busy_timeout``) never stalls the event loop. ``ROLLBACK`` and ``COMMIT`` outside a
transaction (after reads only: SQLite opens one for writes) do nothing, and make no trip.

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
    # In aiosqlite's thread, or for a read in the event loop's (see _read_here), never both
    # at once: the adapter's mutex holds one statement per connection at a time.
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
            done = None if many else _read_here(connection, operation, parameters)
            if done is None:
                done = await connection._execute(  # type: ignore[no-untyped-call]
                    _run, connection, operation, parameters, many
                )
        finished, rows = done
        self._cursor = finished  # type: ignore[assignment]  # the cursor's stand-in, closed
        self._rows = collections.deque(rows)


def _read_here(
    connection: aiosqlite.Connection, operation: str, parameters: Any
) -> tuple[_Finished, list[Any]] | None:
    """Run a ``SELECT`` on this thread, never waiting for a lock; None to run it in the
    driver's thread instead (not a read, or SQLite is busy)."""
    raw: sqlite3.Connection | None = connection._connection
    if raw is None or operation.lstrip()[:6].upper() != "SELECT":
        return None
    timeout = raw.execute("PRAGMA busy_timeout").fetchone()[0]
    raw.execute("PRAGMA busy_timeout=0")
    try:
        return _run(connection, operation, parameters, many=False)
    except sqlite3.OperationalError as exc:
        # An extended code (SQLITE_BUSY_RECOVERY, _SNAPSHOT...) carries the primary one in its
        # low byte: each is "busy", and waits in the driver's thread as well.
        if exc.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY:
            raise
        return None
    finally:
        raw.execute(f"PRAGMA busy_timeout={int(timeout)}")


class _Connection(AsyncAdapt_aiosqlite_connection):
    __slots__ = ()
    _cursor_cls = _OneTripCursor  # type: ignore[assignment]  # a subclass, as the base's

    def rollback(self) -> None:
        if not self._in_transaction():
            return
        super().rollback()

    def commit(self) -> None:
        if not self._in_transaction():
            return
        super().commit()

    def _in_transaction(self) -> bool:
        # Read from the event loop's thread (the connection is opened with
        # check_same_thread=False for this): SQLAlchemy ends a transaction only between
        # statements, so the driver's thread is not changing the state while we look.
        raw: sqlite3.Connection | None = self._connection._connection
        return raw is None or raw.in_transaction


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
