"""The one-trip SQLite cursor: what SQLAlchemy reads from a cursor is still right, and each
statement is a single hand-over to aiosqlite's thread."""

import asyncio
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


def test_a_statement_is_one_trip_to_the_driver_thread(
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
            await conn.execute(text("SELECT 1"))  # the connection's own set-up
            trips.clear()
            result = await conn.execute(text("SELECT 1, 2"))
            assert result.one() == (1, 2)
        # The statement, then the connection's reset as it goes back to the pool.
        assert trips == ["_run", "rollback"]
        await db.close()

    monkeypatch.setattr(aiosqlite.Connection, "_execute", counted)
    asyncio.run(run())
