"""Database trouble: a refusing or black-holed PostgreSQL gives quick 503s, /healthz stays fast,
/readyz says so, and the server recovers by itself when the database is back."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest

from gentity.settings import Settings
from tests.conftest import LiveServer, mint_token, signup
from tests.faults.proxy import FaultyProxy

TIMEOUTS = {
    "database_connect_timeout_seconds": 2,
    "database_statement_timeout_seconds": 2,
    "database_pool_timeout_seconds": 2,
}
# A statement on a black-holed connection: its deadline, then psycopg's attempt to cancel it
# (up to 10 s), then some slack for a loaded machine.
STALLED_BOUND = 2 + 10 + 4


@pytest.fixture
def proxy(database_url: str) -> Iterator[FaultyProxy]:
    parts = urlsplit(database_url)
    faulty = FaultyProxy((parts.hostname or "127.0.0.1", parts.port or 5432))
    yield faulty
    faulty.close()


def _through(database_url: str, proxy: FaultyProxy) -> str:
    parts = urlsplit(database_url)
    return urlunsplit(parts._replace(netloc=f"127.0.0.1:{proxy.port}"))


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_refused_and_black_holed_database(
    database_url: str,
    proxy: FaultyProxy,
    server_factory: Callable[[Settings], LiveServer],
    settings_factory: Callable[..., Settings],
) -> None:
    server = server_factory(
        settings_factory(database_url=_through(database_url, proxy), **TIMEOUTS)
    )
    with httpx.Client(base_url=server.url, timeout=60) as client:
        assert signup(client, "admin@example.com").status_code == 200
        client.headers["Authorization"] = f"Bearer {mint_token(client)}"
        assert client.get("/api/instances").status_code == 200

        proxy.refuse()
        _unavailable(client, within=4)
        proxy.heal()
        _recovers(client)

        proxy.stall()
        _unavailable(client, within=STALLED_BOUND)
        proxy.heal()
        _recovers(client)


def _unavailable(client: httpx.Client, within: float) -> None:
    for path in ("/api/instances", "/api/tokens"):
        started = time.monotonic()
        response = client.get(path)
        assert time.monotonic() - started < within, f"{path} took too long"
        assert response.status_code == 503, response.text
        assert response.json() == {"error": "The database is unavailable; try again shortly"}
        assert response.headers["retry-after"]
        started = time.monotonic()
        assert client.get("/healthz").status_code == 200
        assert time.monotonic() - started < 0.5
    started = time.monotonic()
    ready = client.get("/readyz")
    assert time.monotonic() - started < within
    assert ready.status_code == 503 and set(ready.json()) == {"error"}


def _recovers(client: httpx.Client) -> None:
    deadline = time.monotonic() + 10
    while True:
        response = client.get("/api/instances")
        if response.status_code == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert response.status_code == 200, response.text
    assert client.get("/readyz").status_code == 200
