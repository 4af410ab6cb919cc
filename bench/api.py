"""Figures 7 and 8: authenticated API requests per second against ``GET /healthz``.

Each figure starts a ``gentity serve`` of its own (7 on SQLite, 8 on PostgreSQL) and loads it
with ``wrk`` (one thread, a handful of keep-alive connections, a bearer token), measuring
``/healthz`` in every round next to each authenticated route, so a noisy host slows both sides.
A route's figure is the median of the rounds; its ratio is that over the median ``/healthz``.

The instance list is measured with 20 and with 100 of the user's instances. They are written
straight into the database as stopped instances: starting 100 sandboxes would measure the
provider, and a stopped instance's wire form is the same row and JSON. (A running
instance's entry also carries its agent's health: what its guest last told the server's watch,
which the guest answers at every change; a guest nobody watches is asked during the request.)
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import psycopg
from sqlalchemy import delete

from bench.context import Context, say
from bench.floors import list_floor
from bench.report import Figure
from bench.server import BenchServer
from bench.stats import median, ratio
from gentity.server.db.database import Database
from gentity.server.db.orm import Instance
from gentity.settings import Settings

GOAL = 0.5
POSTGRES_DSN = os.environ.get("GENTITY_BENCH_POSTGRES", "postgresql://127.0.0.1:5432/test")
CONNECTIONS = 8
_RPS = re.compile(r"Requests/sec:\s+([0-9.]+)")
_NON_2XX = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")


async def run_sqlite(ctx: Context) -> Figure:
    fig = ctx.report.add(Figure("7", "api-sqlite", "Authenticated API rps, SQLite", _goal()))
    say("[7] authenticated API throughput on SQLite (wrk)")
    async with BenchServer(str(ctx.server.data_dir.parent)) as server:
        await _measure(ctx, server, fig)
    return fig


async def run_postgres(ctx: Context) -> Figure:
    fig = ctx.report.add(Figure("8", "api-postgres", "Authenticated API rps, PostgreSQL", _goal()))
    say(f"[8] authenticated API throughput on PostgreSQL at {POSTGRES_DSN} (wrk)")
    async with (
        _postgres_schema() as url,
        BenchServer(str(ctx.server.data_dir.parent), database_url=url) as server,
    ):
        await _measure(ctx, server, fig)
    return fig


def _goal() -> str:
    return f">= {GOAL}x /healthz, each route"


async def _measure(ctx: Context, server: BenchServer, fig: Figure) -> None:
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is not installed (apt-get install wrk)")
    seconds = 2 if ctx.plan.quick else 5
    rounds = 3
    me = (await server.api.get("/api/auth/me")).json()
    database_url = _settings(server).resolved_database_url
    database = Database(database_url)
    seeded: list[str] = []
    rps: dict[str, float] = {}
    baselines: dict[str, float] = {}
    try:
        seeded += await seed_instances(database, str(me["id"]), 20)
        routes = {
            "auth/me": "/api/auth/me",
            "instances (20)": "/api/instances",
            "instances/<id>": f"/api/instances/{seeded[0]}",
        }
        phase = await _rounds(server, routes, rounds, seconds)
        baseline = phase.pop("/healthz")
        rps.update(phase)
        baselines.update(dict.fromkeys(phase, baseline))
        seeded += await seed_instances(database, str(me["id"]), 80)
        phase = await _rounds(server, {"instances (100)": "/api/instances"}, rounds, seconds)
        baseline = phase.pop("/healthz")
        rps.update(phase)
        baselines.update(dict.fromkeys(phase, baseline))
        floor = await asyncio.to_thread(list_floor, database_url, str(me["id"]))
    finally:
        await _unseed(database, seeded)
        await database.close()
    ratios = {name: ratio(rps[name], baselines[name]) for name in rps}
    worst = min(ratios, key=lambda name: ratios[name])
    healthz = median(list(set(baselines.values())))
    fig.measured = ", ".join(f"{name} {rps[name]:.0f}" for name in rps) + " rps"
    fig.baseline = f"/healthz {healthz:.0f} rps"
    fig.comparison = f"worst {ratios[worst]:.2f}x ({worst})"
    fig.passed = ratios[worst] >= GOAL
    fig.data = {"rps": rps, "healthz": baselines, "ratios": ratios, "seconds": seconds}
    fig.notes.append(
        f"wrk -t1 -c{CONNECTIONS} -d{seconds}s, median of {rounds} rounds; ratios: "
        + ", ".join(f"{name} {value:.2f}x" for name, value in ratios.items())
    )
    # At the goal a route may cost the server 1/GOAL times a health check: beyond the health
    # check's own cost, that leaves (1/GOAL - 1) health checks' worth for everything else.
    allowance = (1 / GOAL - 1) * 1e6 / baselines["instances (100)"]
    fig.notes.append(
        f"floor of instances (100), in CPU time: the bare driver reads its {floor.rows} rows "
        f"in {floor.read_us:.0f} us, and reads and encodes them as JSON (no validation) in "
        f"{floor.read_and_encode_us:.0f} us; at {GOAL}x, the route has {allowance:.0f} us "
        "beyond /healthz's own cost for that, authentication, routing and the response"
    )
    fig.data["listFloor"] = {
        "readMicroseconds": floor.read_us,
        "readAndEncodeMicroseconds": floor.read_and_encode_us,
        "allowanceMicroseconds": allowance,
    }
    say(f"    {fig.measured}; {fig.baseline}; {fig.comparison}")
    say(f"    {fig.notes[-1]}")


async def _rounds(
    server: BenchServer, routes: dict[str, str], rounds: int, seconds: int
) -> dict[str, float]:
    """Median rps per route name, and of ``/healthz`` (measured once in every round)."""
    samples: dict[str, list[float]] = {"/healthz": [], **{name: [] for name in routes}}
    for _ in range(rounds):
        samples["/healthz"].append(await _wrk(server, "/healthz", seconds))
        for name, path in routes.items():
            samples[name].append(await _wrk(server, path, seconds))
    return {name: median(values) for name, values in samples.items()}


async def _wrk(server: BenchServer, path: str, seconds: int) -> float:
    proc = await asyncio.create_subprocess_exec(
        "wrk",
        "-t1",
        f"-c{CONNECTIONS}",
        f"-d{seconds}s",
        "-H",
        f"Authorization: Bearer {server.token}",
        server.url + path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output = (await proc.communicate())[0].decode(errors="replace")
    found = _RPS.search(output)
    failed = _NON_2XX.search(output)
    if proc.returncode != 0 or found is None or failed is not None:
        raise RuntimeError(f"wrk {path} did not measure cleanly:\n{output}")
    return float(found[1])


def _settings(server: BenchServer) -> Settings:
    return Settings(data_dir=server.data_dir, database_url=server.database_url)


async def seed_instances(database: Database, user_id: str, count: int) -> list[str]:
    rows = [
        Instance(
            user_id=user_id,
            name=f"bench {index}",
            subdomain=f"bn-{secrets.token_hex(6)}",
            agent_type="shell",
            model_provider="none",
            model_name="bash",
            cpus=1,
            memory_mb=512,
            volume_gb=1,
            status="stopped",
            provider="local",
            guest_secret_ciphertext=b"unused: the instance is never started",
        )
        for index in range(count)
    ]
    async with database.session() as session:
        session.add_all(rows)
        await session.commit()
    return [row.id for row in rows]


async def _unseed(database: Database, ids: list[str]) -> None:
    if ids:
        async with database.session() as session:
            await session.execute(delete(Instance).where(Instance.id.in_(ids)))
            await session.commit()


@asynccontextmanager
async def _postgres_schema() -> AsyncIterator[str]:
    """A fresh schema on the benchmark's PostgreSQL, dropped afterwards."""
    schema = f"bench_{secrets.token_hex(6)}"
    async with await psycopg.AsyncConnection.connect(POSTGRES_DSN, autocommit=True) as conn:
        await conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield f"{POSTGRES_DSN}?options=-csearch_path%3D{schema}"
    finally:
        async with await psycopg.AsyncConnection.connect(POSTGRES_DSN, autocommit=True) as conn:
            await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
