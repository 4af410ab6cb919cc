"""Shared fixtures: a database on SQLite and on PostgreSQL, and a real server on a real port."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import uvicorn
from fastapi import FastAPI

from gentity.server.app import create_app
from gentity.server.websocket_protocol import WebSocketProtocol
from gentity.settings import Settings
from gentity.testing.stack import fakes

POSTGRES_DSN = os.environ.get("GENTITY_TEST_POSTGRES", "postgresql://127.0.0.1:5432/test")
PASSWORD = "correct horse battery"


def require(condition: bool, why: str) -> None:
    """Skip a test whose host lacks something, except under CI, where it fails: a skip there
    would hide a missing isolation mechanism or service."""
    if not condition:
        if os.environ.get("CI"):
            pytest.fail(f"required under CI: {why}")
        pytest.skip(why)


def _postgres_available() -> str | None:
    """None when PostgreSQL answers, else why not."""
    try:
        with psycopg.connect(POSTGRES_DSN, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return str(exc).strip().splitlines()[0]
    return None


_PG_PROBLEM = _postgres_available()


def pytest_report_header() -> list[str]:
    where = "reachable" if _PG_PROBLEM is None else f"UNREACHABLE ({_PG_PROBLEM})"
    return [f"gentity: PostgreSQL at {POSTGRES_DSN}: {where}"]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database: a SQLite file, or a PostgreSQL schema of its own."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'gentity.db'}"
        return
    if _PG_PROBLEM is not None:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is required under CI: {_PG_PROBLEM}")
        pytest.skip(f"PostgreSQL unreachable: {_PG_PROBLEM}")
    schema = f"t_{secrets.token_hex(6)}"
    with psycopg.connect(POSTGRES_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield f"{POSTGRES_DSN}?options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(POSTGRES_DSN, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


STACK = os.environ.get("GENTITY_TEST_STACK", "local")
"""``local`` (the default), or ``fakes``: the API suites' servers run instances on the fake Fly
and make their records on the fake Cloudflare (``make test`` runs those suites both ways)."""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if STACK != "fakes":
        return
    # What only the local provider has is tested in the default pass; here it is left out.
    local = [item for item in items if item.get_closest_marker("local_only")]
    if local:
        config.hook.pytest_deselected(items=local)
        items[:] = [item for item in items if not item.get_closest_marker("local_only")]


@pytest.fixture(scope="session")
def stack_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Settings that put every server of the session on the chosen stack."""
    if STACK != "fakes":
        yield {}
        return
    state = tmp_path_factory.mktemp("fakes")
    with fakes(state, "gentity.test") as env:
        # The fly provider reads its own settings (GENTITY_FLY_*) from the environment.
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update({k: v for k, v in env.items() if k.startswith("GENTITY_FLY_")})
        try:
            yield {
                "compute_provider": "fly",
                "dns_provider": "cloudflare",
                "cloudflare_api_url": env["GENTITY_CLOUDFLARE_API_URL"],
                "cloudflare_api_token": env["GENTITY_CLOUDFLARE_API_TOKEN"],
                "cloudflare_zone_id": env["GENTITY_CLOUDFLARE_ZONE_ID"],
                "base_domain": env["GENTITY_BASE_DOMAIN"],
            }
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


@pytest.fixture
def settings_factory(
    tmp_path: Path, database_url: str, stack_settings: dict[str, Any]
) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "data_dir": tmp_path / "data",
            "database_url": database_url,
            "reconcile_interval_seconds": 1.0,
            **stack_settings,
        }
        values.update(overrides)
        return Settings(**values)

    return make


class LiveServer:
    """A real uvicorn server on a free loopback port, run in a background thread."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self.config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=0,
            log_level="warning",
            ws=WebSocketProtocol,  # as `gentity serve`
            # As `gentity serve`: forwarding headers are the app's (GENTITY_TRUSTED_PROXIES).
            proxy_headers=False,
            timeout_graceful_shutdown=2,
        )
        self.server = uvicorn.Server(self.config)
        self.server_loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.port = 0

    def _run(self) -> None:
        asyncio.set_event_loop(self.server_loop)
        try:
            self.server_loop.run_until_complete(self.server.serve())
        finally:
            self.server_loop.close()

    def start(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("test server failed to start")
            time.sleep(0.01)
        sock: socket.socket = self.server.servers[0].sockets[0]
        self.port = sock.getsockname()[1]
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def destroy_leftover_instances(self) -> None:
        from sqlalchemy import select

        from gentity.server.db.orm import Instance
        from gentity.server.services.instances import handle_of

        ctx = self.app.state.ctx

        async def destroy_all() -> None:
            async with ctx.db.session() as session:
                rows = (
                    await session.scalars(
                        select(Instance).where(
                            Instance.destroyed_at.is_(None), Instance.provider_ref.is_not(None)
                        )
                    )
                ).all()
            for row in rows:
                with contextlib.suppress(Exception):
                    await ctx.providers.get(row.provider).destroy(handle_of(row))

        asyncio.run_coroutine_threadsafe(destroy_all(), self.server_loop).result(120)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)


@pytest.fixture
def server_factory(database_url: str) -> Iterator[Callable[[Settings], LiveServer]]:
    # Depends on database_url so that it is torn down first, while the database still exists.
    started: list[LiveServer] = []

    def start(settings: Settings) -> LiveServer:
        server = LiveServer(create_app(settings)).start()
        started.append(server)
        return server

    yield start
    # Instances outlive servers by design; a test that failed half-way must not leave its
    # processes and volumes behind on the machine.
    running = [s for s in started if s.thread.is_alive()]
    if running:
        running[-1].destroy_leftover_instances()
    for server in reversed(started):
        server.stop()


@pytest.fixture
def settings(settings_factory: Callable[..., Settings]) -> Settings:
    return settings_factory()


@pytest.fixture
def server(server_factory: Callable[[Settings], LiveServer], settings: Settings) -> LiveServer:
    return server_factory(settings)


@pytest.fixture
def client(server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c


def signup(client: httpx.Client, email: str, password: str = PASSWORD) -> httpx.Response:
    return client.post("/api/auth/signup", json={"email": email, "password": password})


@pytest.fixture
def admin(client: httpx.Client) -> httpx.Client:
    """``client`` signed in (by cookie) as the first account, which is the admin."""
    response = signup(client, "admin@example.com")
    assert response.status_code == 200, response.text
    return client


def mint_token(client: httpx.Client, name: str = "test") -> str:
    response = client.post("/api/tokens", json={"name": name})
    assert response.status_code == 200, response.text
    token: str = response.json()["token"]
    return token


@pytest.fixture
def token(admin: httpx.Client) -> str:
    return mint_token(admin)


@pytest.fixture
def bearer(server: LiveServer, token: str) -> Iterator[httpx.Client]:
    """A client that authenticates with an API token only (no cookie)."""
    with httpx.Client(
        base_url=server.url, timeout=30, headers={"Authorization": f"Bearer {token}"}
    ) as c:
        yield c


@pytest.fixture
def other_user(server: LiveServer, settings: Settings) -> Iterator[httpx.Client]:
    """A second account, signed in with a bearer token of its own."""
    import asyncio

    from gentity.server.db.database import Database
    from gentity.server.services.accounts import create_user

    async def make() -> None:
        db = Database(settings.resolved_database_url)
        async with db.session() as session:
            await create_user(session, "other@example.com", PASSWORD, admin=False)
        await db.close()

    asyncio.run(make())
    with httpx.Client(base_url=server.url, timeout=30) as c:
        assert (
            c.post(
                "/api/auth/login", json={"email": "other@example.com", "password": PASSWORD}
            ).status_code
            == 200
        )
        other_token = mint_token(c, "other")
    with httpx.Client(
        base_url=server.url, timeout=30, headers={"Authorization": f"Bearer {other_token}"}
    ) as c:
        yield c


@pytest.fixture(scope="session", autouse=True)
def _unmount_leftover_volumes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Instance volumes are loop mounts under each test's data directory. A test that fails
    half-way may leave one mounted; unmount them at the end so the temporary directories can
    be removed (by this run's cleanup or the next one's)."""
    yield
    base = str(tmp_path_factory.getbasetemp())
    with open("/proc/self/mountinfo") as f:
        points = [line.split(" ")[4] for line in f]
    for point in sorted((p for p in points if p.startswith(base + "/")), reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Say plainly how many tests ran on PostgreSQL, so a skipped half cannot hide."""
    counts: dict[str, int] = {}
    for outcome in ("passed", "failed", "skipped", "error"):
        counts[outcome] = sum(
            1 for r in terminalreporter.stats.get(outcome, []) if "[postgres" in r.nodeid
        )
    terminalreporter.write_line(
        "gentity: PostgreSQL tests: "
        + ", ".join(f"{n} {outcome}" for outcome, n in counts.items() if n)
        if any(counts.values())
        else "gentity: no PostgreSQL tests ran"
    )
