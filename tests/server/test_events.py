"""Instance events: the status history after a lifecycle, who asked, pages, and the SSE follow
(live changes, resume with Last-Event-ID, end on destroy and on a revoked credential)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from gentity.providers.compute.base import MachineHandle
from gentity.server import sse
from gentity.server.reconciler import reconcile_once
from gentity.server.services import events
from tests.conftest import LiveServer, mint_token
from tests.server.test_instances import create_shell

Event = dict[str, Any]

LIFECYCLE = [
    (None, "provisioning"),
    ("provisioning", "starting"),
    ("starting", "running"),
    ("running", "stopping"),
    ("stopping", "stopped"),
    ("stopped", "starting"),
    ("starting", "running"),
    ("running", "restarting"),
    ("restarting", "running"),
    ("running", "destroying"),
    ("destroying", "destroyed"),
]


def _token_id(client: httpx.Client, name: str = "test") -> str:
    tokens = client.get("/api/tokens").json()["tokens"]
    return str(next(t["id"] for t in tokens if t["name"] == name))


def _act(client: httpx.Client, iid: str, action: str) -> None:
    response = client.post(f"/api/instances/{iid}/action", json={"action": action})
    assert response.status_code == 200, response.text


def _all_events(client: httpx.Client, iid: str) -> list[Event]:
    response = client.get(f"/api/instances/{iid}/events", params={"limit": 200})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["nextBefore"] is None
    events: list[Event] = body["events"]
    return events


def test_a_lifecycle_is_recorded_newest_first_with_who_asked(bearer: httpx.Client) -> None:
    iid = create_shell(bearer)["id"]
    for action in ("stop", "start", "restart"):
        _act(bearer, iid, action)
    assert bearer.delete(f"/api/instances/{iid}").status_code == 200
    # Still readable by its owner once destroyed: that is when the history matters.
    events = _all_events(bearer, iid)
    assert [(e["from"], e["to"]) for e in reversed(events)] == LIFECYCLE
    ids = [e["id"] for e in events]
    assert ids == sorted(ids, reverse=True)
    actor = f"token:{_token_id(bearer)}"
    for event in events:
        assert set(event) == {"id", "time", "from", "to", "reason", "actor"}
        assert event["reason"]
        assert event["actor"] == actor
        stamp = event["time"]
        assert stamp.endswith("Z") or stamp.endswith("+00:00")
    times = [e["time"] for e in reversed(events)]
    assert times == sorted(times)
    assert events[-1]["reason"] == "created"
    assert events[3]["reason"] == "restart requested"


def test_a_browser_session_is_named_as_the_actor(admin: httpx.Client) -> None:
    iid = create_shell(admin)["id"]
    sessions = admin.get("/api/auth/sessions").json()["sessions"]
    current = next(s["id"] for s in sessions if s["current"])
    events = _all_events(admin, iid)
    assert {e["actor"] for e in events} == {f"session:{current}"}
    admin.delete(f"/api/instances/{iid}")


def test_pages_walk_the_history_with_before(bearer: httpx.Client) -> None:
    iid = create_shell(bearer)["id"]
    _act(bearer, iid, "stop")
    _act(bearer, iid, "start")
    everything = _all_events(bearer, iid)
    assert len(everything) == 7
    pages: list[list[Event]] = []
    before: int | None = None
    while True:
        params: dict[str, Any] = {"limit": 3}
        if before is not None:
            params["before"] = before
        body = bearer.get(f"/api/instances/{iid}/events", params=params).json()
        pages.append(body["events"])
        before = body["nextBefore"]
        if before is None:
            break
        assert before == body["events"][-1]["id"]
    assert [len(p) for p in pages] == [3, 3, 1]
    assert [e for p in pages for e in p] == everything
    default = bearer.get(f"/api/instances/{iid}/events").json()
    assert default == {"events": everything, "nextBefore": None}
    bearer.delete(f"/api/instances/{iid}")


@pytest.mark.parametrize(
    ("name", "bad"),
    [
        ("limit", "0"),
        ("limit", "201"),
        ("limit", "x"),
        ("before", "-1"),
        ("before", "1.5"),
        ("follow", "yes"),
        ("after", "abc"),
    ],
)
def test_bad_parameters_are_400_naming_them(bearer: httpx.Client, name: str, bad: str) -> None:
    response = bearer.get("/api/instances/whatever/events", params={name: bad})
    assert response.status_code == 400
    assert response.json()["error"].startswith(f"{name}:")


def test_bad_last_event_id_is_400(bearer: httpx.Client) -> None:
    response = bearer.get(
        "/api/instances/whatever/events",
        params={"follow": "1"},
        headers={"Last-Event-ID": "not-a-number"},
    )
    assert response.status_code == 400
    assert response.json() == {"error": "Last-Event-ID: must be an event id (a whole number)"}


def test_another_users_instance_is_404_also_once_destroyed(
    bearer: httpx.Client, other_user: httpx.Client
) -> None:
    iid = create_shell(bearer)["id"]
    missing = other_user.get("/api/instances/nope/events")
    for params in ({}, {"follow": "1"}):
        theirs = other_user.get(f"/api/instances/{iid}/events", params=params)
        assert theirs.status_code == 404
        assert theirs.json() == missing.json() == {"error": "Not Found"}
    bearer.delete(f"/api/instances/{iid}")
    assert other_user.get(f"/api/instances/{iid}/events").status_code == 404
    assert bearer.get(f"/api/instances/{iid}/events").status_code == 200


def test_needs_a_credential(client: httpx.Client) -> None:
    response = client.get("/api/instances/whatever/events")
    assert response.status_code == 401
    assert response.json() == {"error": "Unauthorized"}


class _Follower:
    """Reads an event stream in a thread, collecting its events, until the server ends it."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        self.events: list[Event] = []
        self.ids: list[str] = []
        self.ended = threading.Event()
        self.status: int | None = None
        self._thread = threading.Thread(target=self._run, args=(url, headers), daemon=True)
        self._thread.start()

    def _run(self, url: str, headers: dict[str, str]) -> None:
        with httpx.stream("GET", url, headers=headers, timeout=60) as response:
            self.status = response.status_code
            self.content_type = response.headers.get("content-type", "")
            for data, event_id in _parse(response.iter_lines()):
                self.ids.append(event_id)
                self.events.append(data)
        self.ended.set()

    def wait_for(self, to: str, count: int = 1, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while sum(e["to"] == to for e in self.events) < count:
            assert time.monotonic() < deadline, f"no event to {to}: {self.events}"
            time.sleep(0.05)


def _parse(lines: Iterator[str]) -> Iterator[tuple[Event, str]]:
    data: Event | None = None
    event_id = ""
    for line in lines:
        if line.startswith("id: "):
            event_id = line[4:]
        elif line.startswith("data: "):
            data = json.loads(line[6:])
        elif line == "" and data is not None:
            yield data, event_id
            data = None


def test_follow_streams_live_changes_resumes_and_ends_on_destroy(
    server: LiveServer, bearer: httpx.Client
) -> None:
    iid = create_shell(bearer)["id"]
    url = f"{server.url}/api/instances/{iid}/events?follow=1&limit=2"
    headers = dict(bearer.headers)
    first = _Follower(url, headers)
    # Without a cursor, the `limit` most recent events come first, oldest first.
    first.wait_for("running")
    assert [(e["from"], e["to"]) for e in first.events] == LIFECYCLE[1:3]
    assert first.status == 200 and first.content_type.startswith("text/event-stream")
    _act(bearer, iid, "stop")
    first.wait_for("stopped")
    assert [e["to"] for e in first.events[2:]] == ["stopping", "stopped"]
    assert first.ids == [str(e["id"]) for e in first.events]
    # Resuming after "stopping" gives "stopped" and what came since, nothing before.
    resume_from = first.ids[2]
    _act(bearer, iid, "start")
    resumed = _Follower(
        f"{server.url}/api/instances/{iid}/events?follow=1",
        {**headers, "Last-Event-ID": resume_from},
    )
    resumed.wait_for("running")
    assert [e["to"] for e in resumed.events] == ["stopped", "starting", "running"]
    assert bearer.delete(f"/api/instances/{iid}").status_code == 200
    for follower in (first, resumed):
        assert follower.ended.wait(10), "the follow did not end when the instance was destroyed"
        assert follower.events[-1]["to"] == "destroyed"
    # Following a destroyed instance sends what is left and ends at once.
    late = _Follower(url, headers)
    assert late.ended.wait(10)
    assert [e["to"] for e in late.events] == ["destroying", "destroyed"]


def test_revoking_the_credential_ends_the_follow(
    server: LiveServer, admin: httpx.Client, bearer: httpx.Client
) -> None:
    iid = create_shell(bearer)["id"]
    second = mint_token(admin, "second")
    follower = _Follower(
        f"{server.url}/api/instances/{iid}/events?follow=1",
        {"Authorization": f"Bearer {second}"},
    )
    follower.wait_for("running")
    assert admin.delete(f"/api/tokens/{_token_id(admin, 'second')}").status_code == 200
    assert follower.ended.wait(10), "the follow outlived its revoked token"
    bearer.delete(f"/api/instances/{iid}")


@pytest.mark.local_only  # kills a local machine behind the server's back
def test_the_reconciler_is_named_when_it_changes_a_status(
    server: LiveServer, bearer: httpx.Client
) -> None:
    # Under "never", the error is the last event (nothing starts the machine again).
    iid = create_shell(bearer, restartPolicy="never")["id"]
    ctx = server.app.state.ctx
    row = bearer.get(f"/api/instances/{iid}").json()
    assert row["status"] == "running"

    async def machine_dies_then_reconcile() -> None:
        # Stopped behind the control plane's back: only the reconciler can notice.
        await ctx.providers.default.stop(MachineHandle(ref=iid, data={"cpus": 1, "memoryMb": 512}))
        await reconcile_once(ctx)

    asyncio.run_coroutine_threadsafe(machine_dies_then_reconcile(), server.server_loop).result(60)
    latest = bearer.get(f"/api/instances/{iid}/events", params={"limit": 1}).json()["events"][0]
    assert (latest["from"], latest["to"]) == ("running", "error")
    # Whichever noticed first, the guest's watch or the reconciler's pass, acts as the
    # reconciler. (Stopped this way, how the guest ended is not known: see test_recovery.)
    assert (latest["reason"], latest["actor"]) == ("the guest daemon is not running", "reconciler")
    bearer.delete(f"/api/instances/{iid}")


def test_a_quiet_follow_sends_keep_alives(
    server: LiveServer, bearer: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sse, "KEEPALIVE_SECONDS", 0.3)
    monkeypatch.setattr(events, "POLL_SECONDS", 0.1)
    iid = create_shell(bearer)["id"]
    url = f"/api/instances/{iid}/events"
    with bearer.stream("GET", url, params={"follow": "1", "limit": "1"}) as response:
        assert response.headers["cache-control"] == "no-store"
        assert response.headers["x-accel-buffering"] == "no"
        seen: list[str] = []
        for line in response.iter_lines():
            seen.append(line)
            if seen.count(": keep-alive") >= 2:
                break
    assert seen[0] == "retry: 2000"
    assert sum(line.startswith("data: ") for line in seen) == 1
    bearer.delete(f"/api/instances/{iid}")
