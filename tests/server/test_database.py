"""Migrations: they match the ORM, and replicas starting together migrate safely."""

import asyncio
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import event, inspect
from sqlalchemy.engine import Engine

from gentity.server.db.database import Database
from gentity.server.db.orm import Base
from gentity.settings import Settings


def test_migrations_match_the_orm(settings: Settings) -> None:
    async def run() -> list[Any]:
        db = Database(settings.resolved_database_url)
        await db.migrate()
        async with db.engine.connect() as conn:

            def diff(sync_conn: Any) -> list[Any]:
                ctx = MigrationContext.configure(sync_conn, opts={"compare_type": True})
                return list(compare_metadata(ctx, Base.metadata))

            result = await conn.run_sync(diff)
        await db.close()
        return result

    assert asyncio.run(run()) == []


@contextmanager
def ddl_statements() -> Iterator[list[str]]:
    """Every CREATE/ALTER/DROP any engine executes meanwhile (migrations make their own)."""
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if re.match(r"\s*(CREATE|ALTER|DROP)\b", statement, re.IGNORECASE):
            seen.append(statement)

    event.listen(Engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(Engine, "before_cursor_execute", record)


def test_concurrent_start_ups_migrate_once(settings: Settings) -> None:
    """Several replicas starting at the same moment: one migrates, the others find it done."""

    async def run() -> set[str]:
        dbs = [Database(settings.resolved_database_url) for _ in range(4)]
        await asyncio.gather(*(db.migrate() for db in dbs))
        async with dbs[0].engine.connect() as conn:
            tables = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
        for db in dbs:
            await db.close()
        return tables

    with ddl_statements() as ddl:
        tables = asyncio.run(run())
    assert {"users", "sessions", "api_tokens", "instances", "instance_events"} <= tables
    created = [s for s in ddl if re.match(r"\s*CREATE TABLE\s+\W?users\b", s, re.IGNORECASE)]
    assert len(created) == 1, ddl


def test_migrating_twice_is_a_no_op(settings: Settings) -> None:
    async def run(times: int) -> None:
        db = Database(settings.resolved_database_url)
        for _ in range(times):
            await db.migrate()
        await db.close()

    with ddl_statements() as first:
        asyncio.run(run(1))
    with ddl_statements() as again:
        asyncio.run(run(2))
    assert first  # the first run did build the schema
    assert again == []


def test_data_directory_and_database_are_private(tmp_path: Path) -> None:
    import stat

    from gentity.server.app import create_app

    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    data.chmod(0o755)
    settings = Settings(data_dir=data)
    create_app(settings)
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    assert stat.S_IMODE((data / "gentity.db").stat().st_mode) == 0o600
    assert stat.S_IMODE((data / "secret.key").stat().st_mode) == 0o600
    fresh = tmp_path / "fresh" / "deeper"
    Database(f"sqlite+aiosqlite:///{fresh / 'x.db'}")
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o700
    assert stat.S_IMODE((fresh / "x.db").stat().st_mode) == 0o600
