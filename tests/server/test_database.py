"""Migrations: they match the ORM, and replicas starting together migrate safely."""

import asyncio
from pathlib import Path
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

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


def test_concurrent_start_ups_migrate_once(settings: Settings) -> None:
    """Several replicas starting at the same moment all come up on the same schema."""

    async def run() -> set[str]:
        dbs = [Database(settings.resolved_database_url) for _ in range(4)]
        await asyncio.gather(*(db.migrate() for db in dbs))
        async with dbs[0].engine.connect() as conn:
            tables = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
        for db in dbs:
            await db.close()
        return tables

    tables = asyncio.run(run())
    assert {"users", "sessions", "api_tokens", "instances", "instance_events"} <= tables


def test_migrating_twice_is_a_no_op(settings: Settings) -> None:
    async def run() -> None:
        db = Database(settings.resolved_database_url)
        await db.migrate()
        await db.migrate()
        await db.close()

    asyncio.run(run())


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
