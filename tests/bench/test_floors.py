"""The benchmark's floors measure the work their figures contain: the list floor reads and
writes what ``GET /api/instances`` does, and the host's CPU counter sees CPU spent."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime
from typing import Any

import httpx
from bench.api import seed_instances
from bench.floors import encode_list, host_cpu, list_reader

from gentity.server.db.database import Database
from gentity.settings import Settings


def _normalised(entry: dict[str, Any]) -> dict[str, Any]:
    """Datetimes as instants: SQLite hands the floor its stored text, the API writes ISO 8601."""
    out = dict(entry)
    for key in ("createdAt", "updatedAt"):
        moment = datetime.fromisoformat(out[key])
        out[key] = (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC)
    return out


def test_the_list_floor_reads_and_encodes_what_the_route_answers(
    bearer: httpx.Client, settings: Settings
) -> None:
    user_id = bearer.get("/api/auth/me").json()["id"]
    url = settings.resolved_database_url

    async def seed() -> None:
        database = Database(url)
        try:
            await seed_instances(database, user_id, 5)
        finally:
            await database.close()

    asyncio.run(seed())
    with list_reader(url, user_id) as fetch:
        floor = json.loads(encode_list(fetch()))["instances"]
    answered = bearer.get("/api/instances").json()["instances"]

    assert len(answered) == 5
    assert [_normalised(entry) for entry in floor] == [_normalised(entry) for entry in answered]


def test_host_cpu_counts_cpu_spent_in_the_block() -> None:
    with host_cpu() as used:
        spin_until = time.process_time() + 0.3
        while time.process_time() < spin_until:
            pass
    assert used.busy_seconds >= 0.25
    assert 0 < used.utilisation <= 1.0
    assert used.wall_seconds >= 0.3
