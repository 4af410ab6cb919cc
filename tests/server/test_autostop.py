"""Auto-stop: a running instance idle past its ``autoStopMinutes`` is stopped with the reason
``idle``; terminal use keeps it running, an open but quiet terminal does not; 0 never stops.

An auto-stop minute lasts one second here (``GENTITY_AUTO_STOP_MINUTE_SECONDS``) and the check
runs twice a second, so "3 minutes" is three seconds of real idleness on real instances.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest

from gentity.server.db.ids import utcnow
from gentity.server.services import autostop
from gentity.settings import Settings
from tests.conftest import LiveServer, signup
from tests.json_body import json_object
from tests.server.terminal_client import Terminal, ws_url
from tests.server.test_instances import create_shell
from tests.server.test_reconciler import set_row
from tests.waiting import wait_until, wait_until_blocking

MINUTE = 1.0  # seconds an auto-stop minute lasts in these tests


@pytest.fixture
def settings(settings_factory: Callable[..., Settings]) -> Settings:
    return settings_factory(auto_stop_minute_seconds=MINUTE, auto_stop_check_seconds=0.5)


def get(client: httpx.Client, iid: str) -> dict[str, Any]:
    response = client.get(f"/api/instances/{iid}")
    assert response.status_code == 200, response.text
    return json_object(response.json())


def at(value: str) -> datetime:
    return datetime.fromisoformat(value)


def events(client: httpx.Client, iid: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = client.get(f"/api/instances/{iid}/events").json()["events"]
    return found


def test_an_idle_instance_stops_with_the_reason_idle(bearer: httpx.Client) -> None:
    before = utcnow()
    iid = create_shell(bearer, autoStopMinutes=3)["id"]
    shown = get(bearer, iid)
    assert shown["autoStopMinutes"] == 3
    # Counted from the start: not idle yet, and due 3 "minutes" after it began running.
    stop_at = at(shown["autoStopAt"])
    assert before + timedelta(seconds=3) <= stop_at <= utcnow() + timedelta(seconds=3)

    wait_until_blocking(lambda: get(bearer, iid)["status"] == "stopped", "it stops", 30)
    assert utcnow() >= stop_at
    stopped = get(bearer, iid)
    assert stopped["autoStopAt"] is None  # nothing to stop any more
    assert stopped["autoStopMinutes"] == 3
    latest = events(bearer, iid)[:2]
    assert [(e["from"], e["to"], e["reason"], e["actor"]) for e in latest] == [
        ("stopping", "stopped", "idle", "system"),
        ("running", "stopping", "idle", "system"),
    ]

    # Started again, it counts from the new start.
    restarted = utcnow()
    assert bearer.post(f"/api/instances/{iid}/action", json={"action": "start"}).status_code == 200
    again = get(bearer, iid)
    assert again["status"] == "running"
    assert at(again["autoStopAt"]) >= restarted + timedelta(seconds=3)
    bearer.delete(f"/api/instances/{iid}")


def test_typing_keeps_it_running_and_a_quiet_open_terminal_does_not(
    bearer: httpx.Client, token: str
) -> None:
    iid = create_shell(bearer, autoStopMinutes=2)["id"]
    first_deadline = at(get(bearer, iid)["autoStopAt"])

    async def type_then_idle() -> None:
        term = await Terminal.open(ws_url(str(bearer.base_url), iid, token))
        # A keystroke a second, until well past three idle windows after the first deadline.
        until = time.monotonic() + (first_deadline - utcnow()).total_seconds() + 6 * MINUTE
        n = 0
        while time.monotonic() < until:
            n += 1
            await term.send(f"echo tick-{n}\r")
            await term.expect(f"tick-{n}\r\n")
            assert get(bearer, iid)["status"] == "running"
            await asyncio.sleep(1.0)  # the typing rhythm, not a wait for a condition
        shown = get(bearer, iid)
        assert shown["status"] == "running"
        # The checks saw the typing: the time it would stop moved on.
        assert at(shown["autoStopAt"]) > first_deadline + timedelta(seconds=4)
        # Still attached, but nobody types: that is idle.
        await wait_until(lambda: get(bearer, iid)["status"] == "stopped", "it stops", 30)
        await term.close()

    asyncio.run(type_then_idle())
    assert events(bearer, iid)[0]["reason"] == "idle"
    bearer.delete(f"/api/instances/{iid}")


@contextlib.contextmanager
def signed_in(server: LiveServer) -> Iterator[httpx.Client]:
    """A client of ``server`` (the only one on its database) signed in as its first user."""
    with httpx.Client(base_url=server.url, timeout=30) as c:
        assert signup(c, "admin@example.com").status_code == 200
        yield c


@pytest.fixture
def default_one(settings_factory: Callable[..., Settings]) -> Settings:
    # Long checks: this test runs them itself.
    return settings_factory(
        auto_stop_minutes=1, auto_stop_minute_seconds=MINUTE, auto_stop_check_seconds=3600
    )


def test_zero_never_stops_and_the_default_comes_from_the_setting(
    server_factory: Callable[[Settings], LiveServer], default_one: Settings
) -> None:
    server = server_factory(default_one)
    with signed_in(server) as c:
        never = create_shell(c, autoStopMinutes=0)["id"]
        default = create_shell(c)["id"]
        assert get(c, never)["autoStopMinutes"] == 0
        assert get(c, never)["autoStopAt"] is None
        assert get(c, default)["autoStopMinutes"] == 1
        # As far as the database knows, `never` last did anything an hour ago.
        set_row(default_one, never, last_activity_at=utcnow() - timedelta(hours=1))
        stopped = 0

        def check() -> bool:
            nonlocal stopped
            stopped += asyncio.run_coroutine_threadsafe(
                autostop.check_once(server.app.state.ctx), server.server_loop
            ).result(30)
            return bool(get(c, default)["status"] == "stopped")

        # `default` goes once its guest has been quiet for a second.
        wait_until_blocking(check, "the default one stops", 30)
        assert stopped == 1
        assert get(c, never)["status"] == "running"
        assert get(c, never)["autoStopAt"] is None
        for iid in (never, default):
            c.delete(f"/api/instances/{iid}")


@pytest.fixture
def unchecked(settings_factory: Callable[..., Settings]) -> Settings:
    return settings_factory(auto_stop_minute_seconds=MINUTE, auto_stop_check_seconds=3600)


def test_of_two_stops_at_once_one_wins_quietly(
    server_factory: Callable[[Settings], LiveServer], unchecked: Settings
) -> None:
    server = server_factory(unchecked)
    ctx = server.app.state.ctx
    with signed_in(server) as c:
        iid = create_shell(c, autoStopMinutes=5)["id"]
        # Not idle yet: neither stops it.
        assert not asyncio.run_coroutine_threadsafe(
            autostop.stop_if_idle(ctx, iid), server.server_loop
        ).result(30)
        set_row(unchecked, iid, last_activity_at=utcnow() - timedelta(hours=1))

        async def both() -> list[bool]:
            return list(
                await asyncio.gather(
                    autostop.stop_if_idle(ctx, iid), autostop.stop_if_idle(ctx, iid)
                )
            )

        results = asyncio.run_coroutine_threadsafe(both(), server.server_loop).result(30)
        assert sorted(results) == [False, True]
        assert get(c, iid)["status"] == "stopped"
        assert [e["reason"] for e in events(c, iid)[:3]] == ["idle", "idle", "agent running"]
        c.delete(f"/api/instances/{iid}")


@pytest.mark.parametrize("bad", [-1, 10081, "5", 1.5, True])
def test_bad_auto_stop_minutes_are_400(bearer: httpx.Client, bad: object) -> None:
    response = bearer.post(
        "/api/instances",
        json={
            "agentType": "shell",
            "modelProvider": "none",
            "modelName": "bash",
            "autoStopMinutes": bad,
        },
    )
    assert response.status_code == 400
    assert "autoStopMinutes" in response.json()["error"]


def test_the_guests_word_on_activity_is_checked() -> None:
    now = utcnow()
    assert autostop.parse_activity("2026-11-29T10:15:02.123Z") == datetime.fromisoformat(
        "2026-11-29T10:15:02.123+00:00"
    )
    # A time in the future is taken as now: a guest cannot push its deadline past its use.
    future = autostop.parse_activity("2999-01-01T00:00:00Z")
    assert future is not None and now <= future <= utcnow()
    for junk in (None, 12, "", "yesterday", "2026-11-29T10:15:02", "9" * 100):
        assert autostop.parse_activity(junk) is None


def test_two_replicas_stop_an_idle_instance_once(
    server_factory: Callable[[Settings], LiveServer], settings: Settings
) -> None:
    # Two servers on one database and data directory, both checking twice a second.
    first, second = server_factory(settings), server_factory(settings)
    with signed_in(first) as c:
        iid = create_shell(c, autoStopMinutes=2)["id"]
        wait_until_blocking(lambda: get(c, iid)["status"] == "stopped", "it stops", 30)
        # A few more checks by both: nothing more happens to it.
        time.sleep(1.5)
        seen = c.get(f"{second.url}/api/instances/{iid}").json()
        assert seen["status"] == "stopped" and seen["errorMessage"] is None
        history = [(e["to"], e["reason"]) for e in events(c, iid)]
        assert history[:2] == [("stopped", "idle"), ("stopping", "idle")]
        assert [reason for _, reason in history].count("idle") == 2
        c.delete(f"/api/instances/{iid}")
