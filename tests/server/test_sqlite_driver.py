"""The one-trip SQLite cursor: what SQLAlchemy reads from a cursor is still right, a write is a
single hand-over to aiosqlite's thread, a read none, and a busy database never stalls the
event loop."""

import asyncio
import sqlite3
import time
from pathlib import Path

import aiosqlite
import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError, OperationalError

from gentity.server.db import sqlite_driver
from gentity.server.db.database import Database


def _database(tmp_path: Path) -> Database:
    return Database(f"sqlite+aiosqlite:///{tmp_path / 'gentity.db'}")


def test_sqlite_urls_get_the_one_trip_dialect(tmp_path: Path) -> None:
    db = _database(tmp_path)
    assert db.engine.dialect.driver == sqlite_driver.DRIVER
    asyncio.run(db.close())


def test_results_row_counts_and_errors(tmp_path: Path) -> None:
    async def run() -> None:
        db = _database(tmp_path)
        async with db.session() as session:
            await session.execute(
                text("CREATE TABLE t (id INTEGER PRIMARY KEY AUTOINCREMENT, v TEXT UNIQUE)")
            )
            inserted = await session.execute(text("INSERT INTO t (v) VALUES ('a')"))
            assert inserted.lastrowid == 1  # type: ignore[attr-defined]
            many = await session.execute(
                text("INSERT INTO t (v) VALUES (:v)"), [{"v": "b"}, {"v": "c"}]
            )
            assert many.rowcount == 2  # type: ignore[attr-defined]
            rows = await session.execute(text("SELECT id, v FROM t ORDER BY id"))
            assert [tuple(r) for r in rows] == [(1, "a"), (2, "b"), (3, "c")]
            # Compare-and-set status writes rely on an UPDATE's row count.
            updated = await session.execute(text("UPDATE t SET v = v || 'x' WHERE id > 1"))
            assert updated.rowcount == 2  # type: ignore[attr-defined]
            none = await session.execute(text("UPDATE t SET v = 'z' WHERE id > 99"))
            assert none.rowcount == 0  # type: ignore[attr-defined]
            await session.commit()
            with pytest.raises(IntegrityError):
                await session.execute(text("INSERT INTO t (v) VALUES ('a')"))
            await session.rollback()
            with pytest.raises(OperationalError):
                await session.execute(text("SELECT * FROM missing"))
        await db.close()

    asyncio.run(run())


def test_writes_are_one_trip_and_reads_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trips: list[str] = []
    original = aiosqlite.Connection._execute

    async def counted(
        self: aiosqlite.Connection, fn: object, *args: object, **kwargs: object
    ) -> object:
        trips.append(getattr(fn, "__name__", repr(fn)))
        return await original(self, fn, *args, **kwargs)  # type: ignore[no-untyped-call]

    async def run() -> None:
        db = _database(tmp_path)
        async with db.engine.connect() as conn:
            await conn.execute(text("CREATE TABLE t (v INTEGER)"))  # and the set-up
            await conn.commit()
            trips.clear()
            result = await conn.execute(text("SELECT 1, 2"))
            assert result.one() == (1, 2)
        # A read runs on the loop's thread, and the reset after it has nothing to undo.
        assert trips == []
        async with db.engine.connect() as conn:
            await conn.execute(text("INSERT INTO t VALUES (1)"))
            assert (await conn.execute(text("SELECT v FROM t"))).scalar_one() == 1
            await conn.commit()
        # The write and its commit; the read inside the write's transaction made no trip.
        assert trips == ["_run", "commit"]
        trips.clear()
        async with db.engine.connect() as conn:
            await conn.execute(text("INSERT INTO t VALUES (2)"))
        # Not committed: the reset rolls it back (a trip), and the row is gone.
        assert trips == ["_run", "rollback"]
        async with db.engine.connect() as conn:
            assert (await conn.execute(text("SELECT count(*) FROM t"))).scalar_one() == 1
        await db.close()

    monkeypatch.setattr(aiosqlite.Connection, "_execute", counted)
    asyncio.run(run())


def test_a_read_never_waits_for_a_lock_on_the_event_loop(tmp_path: Path) -> None:
    """When SQLite answers "busy" to a read (here: another connection's exclusive lock on a
    database in rollback-journal mode), the read on the loop's thread gives up at once, to be
    run in the driver's thread, where waiting is harmless; the busy timeout is left as it was."""
    path = tmp_path / "plain.db"
    setup = sqlite3.connect(path)
    setup.execute("CREATE TABLE t (v INTEGER)")
    setup.execute("INSERT INTO t VALUES (7)")
    setup.commit()
    setup.close()

    async def run() -> None:
        connection = await aiosqlite.connect(path, timeout=5, check_same_thread=False)
        try:
            found = sqlite_driver._read_here(connection, "SELECT v FROM t", ())
            assert found is not None and found[1] == [(7,)]
            other = sqlite3.connect(path)
            other.execute("BEGIN EXCLUSIVE")
            try:
                started = time.monotonic()
                assert sqlite_driver._read_here(connection, "SELECT v FROM t", ()) is None
                assert time.monotonic() - started < 1  # not the 5 s busy timeout
                # Writes never run here.
                assert sqlite_driver._read_here(connection, "UPDATE t SET v = 8", ()) is None
            finally:
                other.rollback()
                other.close()
            timeout = await connection.execute("PRAGMA busy_timeout")
            assert await timeout.fetchone() == (5000,)
        finally:
            await connection.close()

    asyncio.run(run())
