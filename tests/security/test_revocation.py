"""Credentials end everywhere at once: an SSE follow and a terminal opened with a token or a
session end within 5 s of that credential being revoked, signed out, expired or its user
disabled, also when the change is made by another process sharing the database."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import update
from websockets.exceptions import ConnectionClosed

from gentity.server.db.database import Database
from gentity.server.db.orm import ApiToken, User
from gentity.settings import Settings
from tests.conftest import PASSWORD, LiveServer, mint_token
from tests.server.terminal_client import Terminal, ws_url
from tests.server.test_instances import create_shell

REVOKED_CLOSE_CODE = 4401
DEADLINE = 5.0


async def _follow(base: str, iid: str, opened: asyncio.Event, **client: Any) -> None:
    """Follow the instance's log until the server ends the stream (cleanly: no exception)."""
    async with (
        httpx.AsyncClient(base_url=base, timeout=60, **client) as c,
        c.stream("GET", f"/api/instances/{iid}/logs", params={"follow": "1"}) as response,
    ):
        assert response.status_code == 200
        opened.set()
        async for _ in response.aiter_lines():
            pass


async def _until_closed(term: Terminal) -> int | None:
    with contextlib.suppress(ConnectionClosed):
        while True:
            await term.ws.recv()
    return term.ws.close_code


async def assert_streams_end(
    base: str,
    iid: str,
    end: Callable[[], Awaitable[object]],
    *,
    http: dict[str, Any],
    terminal_url: str,
    terminal: dict[str, Any],
    grace: float = 0.0,
) -> None:
    """Open a follow and a terminal, run ``end``, and see both end within the deadline."""
    opened = asyncio.Event()
    follow = asyncio.create_task(_follow(base, iid, opened, **http))
    term = await Terminal.open(terminal_url, **terminal)
    await term.send("echo open-$((2+3))\r")
    await term.expect("open-5")
    await asyncio.wait_for(opened.wait(), 10)
    # Both stay open while the credential is good: the sleep is the point, nothing may end.
    await asyncio.sleep(0.5)
    assert not follow.done()
    await end()
    started = time.monotonic()
    async with asyncio.timeout(DEADLINE + grace):
        code = await _until_closed(term)
        await follow  # ends without an error: the body is complete
    assert time.monotonic() - started < DEADLINE + grace
    assert code == REVOKED_CLOSE_CODE


def _cookie_header(client: httpx.Client) -> str:
    return "; ".join(f"{k}={v}" for k, v in client.cookies.items())


async def behind_the_servers_back(settings: Settings, statement: Any) -> None:
    """Change the database through a connection of its own, as another replica would."""
    db = Database(settings.resolved_database_url)
    try:
        async with db.session() as session:
            await session.execute(statement)
            await session.commit()
    finally:
        await db.close()


def test_revoking_a_token_ends_its_follow_and_terminal(
    server: LiveServer, bearer: httpx.Client, token: str, admin: httpx.Client
) -> None:
    iid = create_shell(bearer)["id"]
    (record,) = admin.get("/api/tokens").json()["tokens"]

    async def revoke() -> None:
        answer = await asyncio.to_thread(admin.delete, f"/api/tokens/{record['id']}")
        assert answer.status_code == 200

    asyncio.run(
        assert_streams_end(
            server.url,
            iid,
            revoke,
            http={"headers": {"Authorization": f"Bearer {token}"}},
            terminal_url=ws_url(server.url, iid, token),
            terminal={},
        )
    )
    admin.delete(f"/api/instances/{iid}")


def test_signing_out_ends_the_sessions_follow_and_terminal(
    server: LiveServer, admin: httpx.Client
) -> None:
    iid = create_shell(admin)["id"]
    cookies = dict(admin.cookies)

    async def sign_out() -> None:
        answer = await asyncio.to_thread(admin.post, "/api/auth/logout")
        assert answer.status_code == 200

    asyncio.run(
        assert_streams_end(
            server.url,
            iid,
            sign_out,
            http={"cookies": cookies},
            terminal_url=ws_url(server.url, iid),
            terminal={
                "additional_headers": {"Cookie": _cookie_header(admin)},
                "origin": server.url,
            },
        )
    )
    with httpx.Client(base_url=server.url, cookies=cookies) as again:
        again.post("/api/auth/login", json={"email": "admin@example.com", "password": PASSWORD})
        again.delete(f"/api/instances/{iid}")


def test_revoking_a_session_from_another_ends_its_streams(
    server: LiveServer, admin: httpx.Client
) -> None:
    iid = create_shell(admin)["id"]
    with httpx.Client(base_url=server.url) as laptop:
        login = {"email": "admin@example.com", "password": PASSWORD}
        assert laptop.post("/api/auth/login", json=login).status_code == 200
        sessions = laptop.get("/api/auth/sessions").json()["sessions"]
        laptop_session = next(s["id"] for s in sessions if s["current"])

        async def revoke() -> None:
            answer = await asyncio.to_thread(admin.delete, f"/api/auth/sessions/{laptop_session}")
            assert answer.status_code == 200

        asyncio.run(
            assert_streams_end(
                server.url,
                iid,
                revoke,
                http={"cookies": dict(laptop.cookies)},
                terminal_url=ws_url(server.url, iid),
                terminal={
                    "additional_headers": {"Cookie": _cookie_header(laptop)},
                    "origin": server.url,
                },
            )
        )
    admin.delete(f"/api/instances/{iid}")


def test_disabling_the_user_elsewhere_ends_their_streams(
    server: LiveServer, settings: Settings, other_user: httpx.Client
) -> None:
    """The account is disabled by another database client (as another replica or
    ``gentity users disable`` would): this server's open streams still end."""
    iid = create_shell(other_user)["id"]
    token = other_user.headers["Authorization"].removeprefix("Bearer ")

    async def disable() -> None:
        await behind_the_servers_back(
            settings,
            update(User)
            .where(User.email == "other@example.com")
            .values(disabled_at=datetime.now(UTC)),
        )

    asyncio.run(
        assert_streams_end(
            server.url,
            iid,
            disable,
            http={"headers": {"Authorization": f"Bearer {token}"}},
            terminal_url=ws_url(server.url, iid, token),
            terminal={},
        )
    )
    assert other_user.get("/api/instances").status_code == 401


def test_an_expiring_token_ends_its_streams(
    server: LiveServer, settings: Settings, admin: httpx.Client
) -> None:
    iid = create_shell(admin)["id"]
    short = mint_token(admin, "short-lived")
    (record,) = [t for t in admin.get("/api/tokens").json()["tokens"] if t["name"] == "short-lived"]

    async def expire() -> None:
        # Expire it in the database, as time would: no API call tells the server.
        past = datetime.now(UTC) - timedelta(seconds=1)
        await behind_the_servers_back(
            settings, update(ApiToken).where(ApiToken.id == record["id"]).values(expires_at=past)
        )

    asyncio.run(
        assert_streams_end(
            server.url,
            iid,
            expire,
            http={"headers": {"Authorization": f"Bearer {short}"}},
            terminal_url=ws_url(server.url, iid, short),
            terminal={},
        )
    )
    admin.delete(f"/api/instances/{iid}")
