"""The database handle: an async engine with per-backend tuning, and start-up migrations."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio.to_thread
from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine
from sqlalchemy.engine.url import make_url
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from gentity.server.db import sqlite_driver
from gentity.server.db.bounded import BoundedSession, DatabaseUnavailable

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"

# Any fixed 64-bit number: every replica takes the same PostgreSQL advisory lock while it
# migrates, so two replicas starting at once run the migrations one after the other.
_MIGRATION_LOCK_KEY = 0x67656E74697479


@dataclass(frozen=True)
class DatabaseLimits:
    """How long to wait for the database, and how many connections to keep.

    The defaults are the documented ``GENTITY_DATABASE_*`` settings'.
    """

    connect_timeout: float = 5.0
    """Seconds to open a new connection (PostgreSQL)."""
    statement_timeout: float = 15.0
    """Seconds any one call may wait: for a pooled connection, a lock, or an answer."""
    pool_timeout: float = 5.0
    """Seconds to wait for a free pooled connection before giving up."""
    pool_size: int = 10
    max_overflow: int = 10


class Database:
    """One engine and session factory for the whole process."""

    def __init__(self, url: str, limits: DatabaseLimits | None = None) -> None:
        self.url = make_url(url)
        self.limits = limits = limits or DatabaseLimits()
        self.is_sqlite = self.url.get_backend_name() == "sqlite"
        if self.url.drivername == "sqlite+aiosqlite":
            self.url = self.url.set(drivername=f"sqlite+{sqlite_driver.DRIVER}")
        kwargs: dict[str, Any] = {
            # A pooled PostgreSQL connection may have died with its server (a restart, a
            # failover): one round trip on checkout finds out before a request uses it. A
            # SQLite connection is a file this process holds open; the ping would be a
            # wasted trip through the driver's thread on every request.
            "pool_pre_ping": not self.is_sqlite,
            "pool_size": limits.pool_size,
            "max_overflow": limits.max_overflow,
            "pool_timeout": limits.pool_timeout,
        }
        if self.is_sqlite:
            if self.url.database:
                _create_private_file(Path(self.url.database))
            # The driver (sqlite_driver) asks whether a transaction is open from the event
            # loop's thread; statements still run only in aiosqlite's thread.
            kwargs["connect_args"] = {
                "timeout": limits.statement_timeout,
                "check_same_thread": False,
            }
        else:
            kwargs["connect_args"] = _postgres_connect_args(limits)
        self.engine: AsyncEngine = create_async_engine(self.url, **kwargs)
        pragmas = _sqlite_pragmas if self.is_sqlite else _postgres_session_settings
        event.listen(
            self.engine.sync_engine,
            "connect",
            lambda conn, _record: pragmas(conn, limits),
        )
        self.sessionmaker = async_sessionmaker(
            self.engine,
            class_=BoundedSession,
            expire_on_commit=False,
            deadline=limits.statement_timeout,
        )

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        async with self.sessionmaker() as session:
            yield session

    @asynccontextmanager
    async def connect(self) -> AsyncIterator[AsyncConnection]:
        """A pooled connection for a few Core statements, without an ORM session (cheaper on
        a hot path, such as authenticating a request). Bounded as a session is: past the
        statement timeout, the whole block fails with :class:`DatabaseUnavailable`."""
        deadline = self.limits.statement_timeout
        try:
            async with asyncio.timeout(deadline), self.engine.connect() as connection:
                yield connection
        except TimeoutError as exc:
            raise DatabaseUnavailable(f"the database did not answer within {deadline:g} s") from exc

    async def migrate(self) -> None:
        """Bring the schema to the newest revision; safe when replicas start together.

        Runs on a short-lived synchronous engine in a worker thread: the migration lock is a
        blocking wait that must not hold up the event loop.
        """
        await anyio.to_thread.run_sync(self._migrate_sync)

    def _migrate_sync(self) -> None:
        sync_url = self.url.set(drivername="sqlite") if self.is_sqlite else self.url
        engine = create_engine(sync_url)
        try:
            with self._migration_lock(engine), engine.begin() as conn:
                cfg = Config()
                cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "head")
        finally:
            engine.dispose()

    @contextmanager
    def _migration_lock(self, engine: Engine) -> Iterator[None]:
        # PostgreSQL: every replica takes the same advisory lock. SQLite lives on one host, so
        # an exclusive lock on a file beside the database does the same job.
        if self.is_sqlite:
            lock_path = Path(f"{self.url.database or 'gentity.db'}.migrate-lock")
            with lock_path.open("a") as fh:
                fcntl.flock(fh, fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(fh, fcntl.LOCK_UN)
            return
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _MIGRATION_LOCK_KEY})
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _MIGRATION_LOCK_KEY})

    async def ping(self) -> None:
        """One round trip, within the statement timeout; raises when the database is not there."""
        try:
            async with asyncio.timeout(self.limits.statement_timeout):
                async with self.engine.connect() as conn:
                    await conn.execute(text("SELECT 1"))
        except TimeoutError as exc:
            raise DatabaseUnavailable("the database did not answer in time") from exc

    async def close(self) -> None:
        await self.engine.dispose()


def _create_private_file(path: Path) -> None:
    """Create the SQLite file (and its directory) readable by this user only.

    SQLite gives its -wal and -shm files the database file's permissions.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def _postgres_connect_args(limits: DatabaseLimits) -> dict[str, Any]:
    # libpq counts connect_timeout in whole seconds and ignores anything under 2. Keepalives
    # and tcp_user_timeout let the kernel give up on a peer that vanished (a partition)
    # instead of retransmitting for a quarter of an hour.
    return {
        "connect_timeout": max(2, round(limits.connect_timeout)),
        "keepalives": 1,
        "keepalives_idle": 10,
        "keepalives_interval": 5,
        "keepalives_count": 3,
        "tcp_user_timeout": int(limits.statement_timeout * 1000),
    }


def _postgres_session_settings(dbapi_conn: Any, limits: DatabaseLimits) -> None:
    # The server ends a statement that runs (or waits for a lock) too long on its own, so a
    # stuck query frees its connection and locks even if this process goes away.
    autocommit = dbapi_conn.autocommit
    dbapi_conn.autocommit = True
    cursor = dbapi_conn.cursor()
    cursor.execute(f"SET statement_timeout = {int(limits.statement_timeout * 1000)}")
    cursor.close()
    dbapi_conn.autocommit = autocommit


def _sqlite_pragmas(dbapi_conn: Any, limits: DatabaseLimits) -> None:
    # WAL lets readers run beside the one writer; busy_timeout makes a second writer wait
    # (within the statement timeout) instead of failing at once with "database is locked".
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={int(limits.statement_timeout * 1000)}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()
