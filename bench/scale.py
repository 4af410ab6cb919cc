"""Figure 12: scale on PostgreSQL, 10,000 instances of 1,000 users.

A database of its own (``gentity_bench_<random>`` on the benchmark's PostgreSQL, dropped at
the end) gets the server's schema from a ``gentity serve`` started on it (which migrates it as
it always does), then 10,000 instance rows written straight into it: 100 for the benchmark's
user, 9,900 spread over 999 other users. Every row is a ``running`` instance of the ``fly``
provider (restart policy ``never``) whose machine is a real record in a fake Fly
(``gentity.testing.fakefly``, in a process of its own) holding the 10,000 apps and machines.

- **Listing**: ``GET /api/instances`` for the user with 100 instances, one request after
  another on one keep-alive connection, p50 and p99, beside ``GET /healthz`` measured in the
  same way in the same run. That server does not run the ``fly`` provider, so it asks no guest
  for an agent's health (there are no guests): what is measured is the query, the rows and the
  JSON, as for the stopped instances of figures 7 and 8.
- **Reconciler pass**: ``reconciler.reconcile_once`` run in this process against the same
  database, with a ``fly`` provider pointed at the fake: one query for every active row, the
  machines' statuses from the organization's machine listing (a few pages of 2,000), and the
  work on the rows that changed. First a pass in which 100 machines have stopped behind the
  server's back (those 100 rows are written to ``error`` with an event each: the pass checked
  10,000 machines), then passes over the 9,900 steady ones, in which this server already
  watches every running instance's guest and holds its last configured answer (as it does
  once its watches run; a stand-in task and answer hold each watch's place, since there are no
  guests to watch): they write nothing. The baseline is the same steady pass asking each
  machine's status on its own (``GET`` per machine, 16 at a time), as providers without a
  batch do.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
from sqlalchemy import func, insert, select

from bench.context import Context, say
from bench.report import Figure
from bench.server import BenchServer, free_port
from bench.stats import median, percentile
from gentity.catalog import load_catalog
from gentity.providers.compute.base import MachineHandle, MachineStatus, ProviderError
from gentity.providers.compute.fly.api import FlyApi
from gentity.providers.compute.fly.provider import FlyProvider
from gentity.providers.compute.fly.settings import FlySettings
from gentity.providers.compute.registry import Providers
from gentity.providers.dns.none import NoDns
from gentity.server.context import AppContext
from gentity.server.db.database import Database
from gentity.server.db.ids import new_id, utcnow
from gentity.server.db.orm import Instance, InstanceEvent, User
from gentity.server.node import NodeIdentity
from gentity.server.reconciler import reconcile_once
from gentity.server.security.crypto import SecretBox
from gentity.settings import Settings

POSTGRES_DSN = os.environ.get("GENTITY_BENCH_POSTGRES", "postgresql://127.0.0.1:5432/test")
USERS = 1000
INSTANCES = 10_000
MINE = 100
CHANGED = 100
LIST_GOAL = 0.050
PASS_GOAL = 5.0
PREFIX = "gentity-"
ORG = "personal"
FAKE_TOKEN = "fo1_bench-scale-token"


async def run(ctx: Context) -> Figure:
    fig = ctx.report.add(
        Figure(
            "12",
            "scale-postgres",
            "Scale on PostgreSQL: 10,000 instances of 1,000 users",
            f"list 100 p99 <= {LIST_GOAL * 1000:.0f} ms; reconciler pass <= {PASS_GOAL:.0f} s",
        )
    )
    say(f"[12] {INSTANCES} instances of {USERS} users on PostgreSQL at {POSTGRES_DSN}")
    calls = 200 if ctx.plan.quick else 1000
    steady_passes = 2 if ctx.plan.quick else 5
    work = Path(tempfile.mkdtemp(prefix="scale-", dir=ctx.server.data_dir.parent))
    try:
        async with (
            _database() as url,
            BenchServer(str(work), database_url=url) as server,
        ):
            me = (await server.api.get("/api/auth/me")).json()
            database = Database(url)
            try:
                machines = await _seed(database, str(me["id"]))
                listing = await _listing(server, calls)
                async with _fake_fly(work, machines) as fake_url:
                    passes = await _passes(database, work, url, fake_url, machines, steady_passes)
            finally:
                await database.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    _report(fig, listing, passes, calls)
    return fig


# --- the database ---------------------------------------------------------------------------


@asynccontextmanager
async def _database() -> AsyncIterator[str]:
    """A fresh database on the benchmark's PostgreSQL, dropped afterwards."""
    name = f"gentity_bench_{secrets.token_hex(6)}"
    base, _, _ = POSTGRES_DSN.rpartition("/")
    async with await psycopg.AsyncConnection.connect(POSTGRES_DSN, autocommit=True) as conn:
        await conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{base}/{name}"
    finally:
        async with await psycopg.AsyncConnection.connect(POSTGRES_DSN, autocommit=True) as conn:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _seed(database: Database, my_user_id: str) -> list[tuple[str, str]]:
    """Write the users and instances; returns each instance's (app, machine id)."""
    now = utcnow()
    users = [
        {
            "id": new_id(),
            "email": f"scale-{index}@example.com",
            "password_hash": "unused: never signs in",
            "is_admin": False,
            "created_at": now,
        }
        for index in range(USERS - 1)
    ]
    owners = [my_user_id] * MINE + [
        users[index % len(users)]["id"] for index in range(INSTANCES - MINE)
    ]
    rows: list[dict[str, Any]] = []
    machines: list[tuple[str, str]] = []
    for index, owner in enumerate(owners):
        instance_id = new_id()
        app, machine = f"{PREFIX}{instance_id.lower()}", secrets.token_hex(7)
        machines.append((app, machine))
        rows.append(
            {
                "id": instance_id,
                "user_id": owner,
                "name": f"scale {index}",
                "subdomain": f"sc-{secrets.token_hex(8)}",
                "agent_type": "shell",
                "model_provider": "none",
                "model_name": "bash",
                "region": "iad",
                "cpus": 1,
                "memory_mb": 512,
                "volume_gb": 1,
                "status": "running",
                "provider": "fly",
                "provider_ref": app,
                "provider_state": {"machine": machine, "volume": "vol_bench", "region": "iad"},
                "guest_secret_ciphertext": b"unused: no guest is asked",
                "restart_policy": "never",
                "created_at": now - timedelta(seconds=INSTANCES - index),
                "updated_at": now - timedelta(hours=1),
                "last_activity_at": now - timedelta(hours=1),
            }
        )
    async with database.session() as session:
        await session.execute(insert(User), users)
        for start in range(0, len(rows), 2000):
            await session.execute(insert(Instance), rows[start : start + 2000])
        await session.commit()
        count = await session.scalar(select(func.count()).select_from(Instance))
    say(f"    seeded {len(users) + 1} users and {count} instances")
    return machines


# --- the listing ----------------------------------------------------------------------------


async def _listing(server: BenchServer, calls: int) -> dict[str, list[float]]:
    """Latency of ``/api/instances`` (100 instances) and of ``/healthz``, interleaved."""
    samples: dict[str, list[float]] = {"list": [], "healthz": []}
    async with httpx.AsyncClient(
        base_url=server.url, headers={"Authorization": f"Bearer {server.token}"}, timeout=30
    ) as client:
        listed = (await client.get("/api/instances")).json()["instances"]
        if len(listed) != MINE:
            raise RuntimeError(f"the list has {len(listed)} instances, not {MINE}")
        for _ in range(20):  # warm-up: connections, caches, the first queries' plans
            await client.get("/api/instances")
            await client.get("/healthz")
        for _ in range(calls):
            for name, path in (("list", "/api/instances"), ("healthz", "/healthz")):
                started = time.perf_counter()
                response = await client.get(path)
                samples[name].append(time.perf_counter() - started)
                if response.status_code != 200:
                    raise RuntimeError(f"GET {path} answered {response.status_code}")
    return samples


# --- the fake Fly ---------------------------------------------------------------------------


@asynccontextmanager
async def _fake_fly(work: Path, machines: Sequence[tuple[str, str]]) -> AsyncIterator[str]:
    """The fake Fly in a process of its own, its store holding ``machines``, all started."""
    seed = work / "machines.json"
    seed.write_text(json.dumps(machines))
    port = free_port()
    log = (work / "fakefly.log").open("ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.scale", str(work / "fakefly"), str(seed), str(port)],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=Path(__file__).resolve().parent.parent,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(timeout=5) as client:
            deadline = time.monotonic() + 120
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"the fake Fly exited; see {work / 'fakefly.log'}")
                with contextlib.suppress(httpx.TransportError):
                    if (await client.get(f"{url}/__fake__/bench/ready")).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError("the fake Fly did not start within 120 s")
                await asyncio.sleep(0.2)
        yield url
    finally:
        process.kill()  # its store is in memory; its state directory is ours to remove
        process.wait()
        log.close()


def _serve_fake(state_dir: Path, seed: Path, port: int) -> None:
    """``python -m bench.scale STATE SEED PORT``: the fake Fly with the seeded machines (apps
    and machines put straight into its store: there is nothing to run for them)."""
    import uvicorn
    from fastapi.responses import JSONResponse

    from gentity.testing.fakefly import create_app
    from gentity.testing.fakefly import ids as fake_ids
    from gentity.testing.fakefly.state import App as FakeApp
    from gentity.testing.fakefly.state import Machine as FakeMachine
    from gentity.testing.fakefly.state import private_ip

    app = create_app(state_dir, rate_limits=False)
    fleet = app.state.fleet
    for name, machine_id in json.loads(seed.read_text()):
        fake_app = FakeApp(fake_ids.app_id(), name, ORG, name, secrets.randbelow(1 << 31))
        fake_app.machines[machine_id] = FakeMachine(
            id=machine_id,
            app=name,
            name="guest",
            region="iad",
            config={"image": "bench", "metadata": {}},
            private_ip=private_ip(fake_app, machine_id),
            state="started",
        )
        fleet.apps[name] = fake_app

    @app.get("/__fake__/bench/ready")
    async def ready() -> JSONResponse:
        return JSONResponse({"machines": len(fleet.apps)})

    @app.post("/__fake__/bench/stop")
    async def stop(body: dict[str, Any]) -> JSONResponse:
        """Stop these machines behind the server's back (no process to signal)."""
        for name, machine_id in body["machines"]:
            await fleet.apps[name].machines[machine_id].set_state("stopped")
        return JSONResponse({"ok": True})

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


# --- the reconciler -------------------------------------------------------------------------


class _OneByOne(FlyProvider):
    """The baseline: each machine's status on its own, as a provider without a batch does."""

    async def statuses(
        self, handles: Sequence[MachineHandle]
    ) -> list[MachineStatus | ProviderError]:
        return await super(FlyProvider, self).statuses(handles)


async def _passes(
    database: Database,
    work: Path,
    url: str,
    fake_url: str,
    machines: Sequence[tuple[str, str]],
    steady: int,
) -> dict[str, Any]:
    settings = Settings(data_dir=work / "reconciler", database_url=url)
    settings.data_dir.mkdir(mode=0o700)
    fly = FlySettings(api_token=FAKE_TOKEN, api_url=fake_url, org=ORG, app_prefix=PREFIX)

    def context(provider: FlyProvider) -> AppContext:
        ctx = AppContext(
            settings=settings,
            db=Database(url),
            box=SecretBox.from_settings(None, settings.data_dir, settings.resolved_secret_key_file),
            catalog=load_catalog(),
            providers=Providers({"fly": provider}, "fly"),
            dns=NoDns(),
        )
        ctx.node = NodeIdentity(settings.data_dir)
        return ctx

    batched = context(FlyProvider(FlyApi(FAKE_TOKEN, base_url=fake_url), fly))
    one_by_one = context(_OneByOne(FlyApi(FAKE_TOKEN, base_url=fake_url), fly))
    async with httpx.AsyncClient(timeout=60) as client:
        stopped = list(machines[MINE : MINE + CHANGED])
        (await client.post(f"{fake_url}/__fake__/bench/stop", json={"machines": stopped}))
    result: dict[str, Any] = {}
    try:
        # This server watches every running instance and has heard its configured guest; there
        # is no guest, so a task that waits for ever and a stand-in answer hold each watch's place.
        forever = asyncio.Event()

        async def hold() -> None:
            await forever.wait()

        for ctx in (batched, one_by_one):
            async with ctx.db.session() as session:
                ids = list(await session.scalars(select(Instance.id)))
            for instance_id in ids:
                ctx.watches[instance_id] = asyncio.create_task(hold())
                ctx.heard[instance_id] = {"configured": True}
        report = await reconcile_once(batched)
        async with database.session() as session:
            errors = await session.scalar(
                select(func.count()).select_from(Instance).where(Instance.status == "error")
            )
            events = await session.scalar(select(func.count()).select_from(InstanceEvent))
        if errors != CHANGED or events != CHANGED:
            raise RuntimeError(f"the pass wrote {errors} errors and {events} events")
        result["changed"] = {"seconds": report.seconds, "rows": report.rows, "acted": report.acted}
        say(f"    pass with {CHANGED} stopped machines: {report.seconds:.3f} s")
        steady_times = []
        for _ in range(steady):
            report = await reconcile_once(batched)
            if report.acted:
                raise RuntimeError(f"a steady pass acted on {report.acted} instances")
            steady_times.append(report.seconds)
        result["steady"] = {"seconds": steady_times, "rows": report.rows}
        say(f"    steady passes: {', '.join(f'{s:.3f}' for s in steady_times)} s")
        report = await reconcile_once(one_by_one)
        result["one_by_one"] = {"seconds": report.seconds, "rows": report.rows}
        say(f"    steady pass, status per machine: {report.seconds:.3f} s")
    finally:
        for ctx in (batched, one_by_one):
            for task in ctx.watches.values():
                task.cancel()
            await ctx.providers.close()
            await ctx.db.close()
            if ctx.node is not None:
                ctx.node.close()
    return result


# --- the figure -----------------------------------------------------------------------------


def _report(
    fig: Figure, listing: dict[str, list[float]], passes: dict[str, Any], calls: int
) -> None:
    list_p50, list_p99 = median(listing["list"]), percentile(listing["list"], 99)
    hz_p50, hz_p99 = median(listing["healthz"]), percentile(listing["healthz"], 99)
    steady = median(passes["steady"]["seconds"])
    worst_pass = max([passes["changed"]["seconds"], *passes["steady"]["seconds"]])
    base = passes["one_by_one"]["seconds"]
    fig.measured = (
        f"list 100: p50 {list_p50 * 1000:.1f} ms, p99 {list_p99 * 1000:.1f} ms; "
        f"pass: {passes['changed']['seconds']:.2f} s with {CHANGED} changes, "
        f"steady median {steady:.2f} s"
    )
    fig.baseline = (
        f"/healthz p50 {hz_p50 * 1000:.1f} ms, p99 {hz_p99 * 1000:.1f} ms; "
        f"pass asking each machine {base:.2f} s"
    )
    fig.comparison = (
        f"list p99 {list_p99 / hz_p99:.1f}x /healthz p99; pass {base / steady:.0f}x faster batched"
    )
    fig.passed = list_p99 <= LIST_GOAL and worst_pass <= PASS_GOAL
    fig.data = {"listing": listing, "passes": passes}
    fig.notes.append(
        f"{calls} sequential calls each on one connection; passes over "
        f"{passes['changed']['rows']} then {passes['steady']['rows']} running rows "
        "(reconciler in-process, fake Fly in its own process)"
    )
    say(f"    {fig.measured}; {fig.baseline}")


if __name__ == "__main__":
    _serve_fake(Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]))
