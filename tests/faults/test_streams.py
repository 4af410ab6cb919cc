"""Streams hold no database connection: more followers and terminals than the pool has
connections leave the API answering normally and /healthz fast."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

import httpx

from gentity.settings import Settings
from tests.conftest import LiveServer, mint_token, signup
from tests.server.terminal_client import Terminal, ws_url
from tests.server.test_instances import SHELL
from tests.waiting import wait_until

# Two connections and no overflow: every follower holding one would starve the API at once.
POOL = {"database_pool_size": 2, "database_max_overflow": 0, "database_pool_timeout_seconds": 2}
FOLLOWERS = 12
TERMINALS = 6


def test_streams_leave_the_pool_to_the_api(
    server_factory: Callable[[Settings], LiveServer], settings_factory: Callable[..., Settings]
) -> None:
    server = server_factory(settings_factory(**POOL))
    with httpx.Client(base_url=server.url, timeout=30) as admin:
        assert signup(admin, "admin@example.com").status_code == 200
        token = mint_token(admin)
    headers = {"Authorization": f"Bearer {token}"}

    started: asyncio.Queue[None] = asyncio.Queue()

    async def run() -> None:
        async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=30) as api:
            created = await api.post("/api/instances", json=SHELL)
            assert created.status_code == 200, created.text
            iid = created.json()["id"]
            try:
                async with contextlib.AsyncExitStack() as streams:
                    readers = [
                        asyncio.create_task(_follow(api, iid, started)) for _ in range(FOLLOWERS)
                    ]
                    streams.callback(lambda: [r.cancel() for r in readers])
                    await wait_until(
                        lambda: started.qsize() == FOLLOWERS, "every follower is streaming"
                    )
                    for _ in range(TERMINALS):
                        term = await Terminal.open(ws_url(server.url, iid, token))
                        streams.push_async_callback(term.close)
                    await _api_answers_normally(api, iid)
            finally:
                assert (await api.delete(f"/api/instances/{iid}")).status_code == 200

    async def bounded() -> None:
        async with asyncio.timeout(90):  # a starved pool would hang, not fail
            await run()

    asyncio.run(bounded())


async def _follow(api: httpx.AsyncClient, iid: str, started: asyncio.Queue[None]) -> None:
    """A follower that keeps reading, as a real one does."""
    async with api.stream("GET", f"/api/instances/{iid}/logs", params={"follow": 1}) as response:
        assert response.status_code == 200
        started.put_nowait(None)
        async for _ in response.aiter_lines():
            pass


async def _api_answers_normally(api: httpx.AsyncClient, iid: str) -> None:
    for _ in range(5):
        started = time.monotonic()
        assert (await api.get("/healthz")).status_code == 200
        assert time.monotonic() - started < 0.5
        started = time.monotonic()
        listed, one, ready = await asyncio.gather(
            api.get("/api/instances"), api.get(f"/api/instances/{iid}"), api.get("/readyz")
        )
        assert time.monotonic() - started < 1.5, "the API waited for a database connection"
        assert listed.status_code == 200, listed.text
        assert one.status_code == 200 and one.json()["status"] == "running"
        assert ready.status_code == 200, ready.text
