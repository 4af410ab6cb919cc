"""Instance logs: tail with ``lines``, SSE follow with keep-alives, resume, and disconnects."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from gentity.server import sse
from tests.conftest import LiveServer
from tests.server.terminal_client import Terminal, ws_url
from tests.server.test_instances import create_shell
from tests.waiting import wait_until_blocking


def type_into(base: str, iid: str, token: str, command: str, marker: str) -> None:
    async def run() -> None:
        term = await Terminal.open(ws_url(base, iid, token))
        await term.send(command + "\r")
        await term.expect(marker)
        await term.close()

    asyncio.run(run())


@pytest.mark.parametrize("bad", ["0", "1001", "abc", "-5", "2.5", ""])
def test_lines_must_be_1_to_1000(bearer: httpx.Client, bad: str) -> None:
    iid = create_shell(bearer)["id"]
    response = bearer.get(f"/api/instances/{iid}/logs", params={"lines": bad})
    assert response.status_code == 400
    assert "lines" in response.json()["error"]
    bearer.delete(f"/api/instances/{iid}")


def test_tail_is_oldest_first_and_survives_stop_start(bearer: httpx.Client, token: str) -> None:
    iid = create_shell(bearer)["id"]
    base = str(bearer.base_url)
    type_into(
        base, iid, token, "for i in 1 2 3 4 5; do echo row-$i; done; echo end-$((9+1))", "end-10"
    )
    for _ in range(100):  # the guest writes the log a moment after the terminal shows output
        logs = bearer.get(f"/api/instances/{iid}/logs", params={"lines": 1000}).json()["logs"]
        rows = [line["message"] for line in logs if line["message"].startswith("row-")]
        if len(rows) == 5 and logs[-1]["message"].endswith("#"):
            break
        time.sleep(0.05)
    assert rows == ["row-1", "row-2", "row-3", "row-4", "row-5"]
    for line in logs:
        assert set(line) == {"timestamp", "level", "message"}
        assert line["level"] in ("debug", "info", "warn", "error")
    stamps = [line["timestamp"] for line in logs]
    assert stamps == sorted(stamps)
    two = bearer.get(f"/api/instances/{iid}/logs", params={"lines": 2}).json()["logs"]
    assert len(two) == 2 and two == logs[-2:]
    default = bearer.get(f"/api/instances/{iid}/logs").json()["logs"]
    assert 0 < len(default) <= 200
    bearer.post(f"/api/instances/{iid}/action", json={"action": "stop"})
    after_stop = bearer.get(f"/api/instances/{iid}/logs", params={"lines": 1000}).json()["logs"]
    assert [m for m in after_stop[: len(logs)]] == logs
    bearer.post(f"/api/instances/{iid}/action", json={"action": "start"})
    restarted = bearer.get(f"/api/instances/{iid}/logs", params={"lines": 1000}).json()["logs"]
    assert any(m["message"] == "row-3" for m in restarted)
    bearer.delete(f"/api/instances/{iid}")


def _read_events(
    lines: Iterator[str], until: Callable[[list[dict[str, Any]]], bool]
) -> list[dict[str, Any]]:
    """Parse SSE events (and comments) until ``until(events)`` holds or 15 s pass."""
    events: list[dict[str, Any]] = []
    current: dict[str, Any] = {}
    deadline = time.monotonic() + 15
    for line in lines:
        if line.startswith("id: "):
            current["id"] = line[4:]
        elif line.startswith("data: "):
            current["data"] = json.loads(line[6:])
        elif line.startswith(":"):
            events.append({"comment": line})
        elif line == "" and current:
            events.append(current)
            current = {}
        if until(events) or time.monotonic() > deadline:
            break
    return events


def _has(message: str) -> Callable[[list[dict[str, Any]]], bool]:
    return lambda events: any(e.get("data", {}).get("message") == message for e in events)


def test_follow_streams_new_lines_and_resumes(
    server: LiveServer, bearer: httpx.Client, token: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sse, "KEEPALIVE_SECONDS", 0.3)
    iid = create_shell(bearer)["id"]
    base = str(bearer.base_url)
    url = f"/api/instances/{iid}/logs"
    typist = threading.Timer(
        1.0,
        type_into,
        (base, iid, token, "echo sse-1; sleep 1; echo sse-2; echo e-$((1+1))", "e-2"),
    )
    typist.start()
    with bearer.stream("GET", url, params={"follow": "1", "lines": "1"}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-store"
        events = _read_events(response.iter_lines(), _has("sse-1"))
    typist.join()
    assert any("comment" in e for e in events), "no keep-alive comment seen"
    last = next(e for e in events if e.get("data", {}).get("message") == "sse-1")
    # Resume after sse-1: what follows is new, nothing is repeated.
    with bearer.stream(
        "GET", url, params={"follow": "1"}, headers={"Last-Event-ID": last["id"]}
    ) as resumed:
        more = _read_events(resumed.iter_lines(), _has("sse-2"))
    messages = [e["data"]["message"] for e in more if "data" in e]
    assert "sse-1" not in messages
    assert "sse-2" in messages
    bearer.delete(f"/api/instances/{iid}")


def test_following_a_stopped_instance_gives_its_log_then_goes_on_once_it_runs(
    server: LiveServer, bearer: httpx.Client, token: str
) -> None:
    iid = create_shell(bearer)["id"]
    base = str(bearer.base_url)
    type_into(base, iid, token, "echo before-$((6*7))", "before-42")
    wait_until_blocking(
        lambda: any(
            line["message"].endswith("before-42")
            for line in bearer.get(f"/api/instances/{iid}/logs").json()["logs"]
        ),
        "the echo is in the log",
    )
    assert bearer.post(f"/api/instances/{iid}/action", json={"action": "stop"}).status_code == 200
    url = f"/api/instances/{iid}/logs"
    with bearer.stream("GET", url, params={"follow": "1", "lines": "50"}) as response:
        assert response.status_code == 200
        lines = response.iter_lines()
        history = _read_events(lines, _has("before-42"))
        # What the stopped instance's log holds comes without a cursor to resume after.
        (old,) = [e for e in history if e.get("data", {}).get("message") == "before-42"]
        assert "id" not in old
        starter = threading.Timer(
            0.5, bearer.post, (f"/api/instances/{iid}/action",), {"json": {"action": "start"}}
        )
        starter.start()
        typist = threading.Timer(
            3.0, type_into, (base, iid, token, "echo after-$((6*8))", "after-48")
        )
        typist.start()
        later = _read_events(lines, _has("after-48"))
        starter.join()
        typist.join()
    (new,) = [e for e in later if e.get("data", {}).get("message") == "after-48"]
    assert new["id"]  # from the running guest again: resumable
    bearer.delete(f"/api/instances/{iid}")


def test_disconnect_leaves_no_stream_behind(server: LiveServer, bearer: httpx.Client) -> None:
    iid = create_shell(bearer)["id"]
    instance = server.app.state.ctx.settings.data_dir / "instances" / iid
    log_file = instance / "disk" / "logs" / "agent.log"

    def open_log_handles() -> int:
        count = 0
        for fd in os.listdir(f"/proc/{os.getpid()}/fd"):
            try:
                target = os.readlink(f"/proc/{os.getpid()}/fd/{fd}")
            except OSError:
                continue
            count += target == str(log_file)
        return count

    tasks_before = _server_tasks(server)
    for _ in range(3):
        with bearer.stream("GET", f"/api/instances/{iid}/logs", params={"follow": "1"}) as r:
            # The stream is live: it replays recent lines as events.
            assert any(line.startswith("data: ") for line in r.iter_lines())
    wait_until_blocking(lambda: open_log_handles() == 0, "every follow closed the log file")
    wait_until_blocking(
        lambda: _server_tasks(server) <= tasks_before, "every follow's task on the server ended"
    )
    # The server still answers promptly.
    assert bearer.get("/healthz").status_code == 200
    bearer.delete(f"/api/instances/{iid}")


def test_destroy_ends_its_log_followers(server: LiveServer, bearer: httpx.Client) -> None:
    """A follower holds the log open on the instance's volume: destroying the instance still
    finishes promptly, and the follow ends instead of waiting on a log that is gone."""
    iid = create_shell(bearer)["id"]
    reading = threading.Event()
    ended = threading.Event()

    def follow() -> None:
        url = f"{server.url}/api/instances/{iid}/logs?follow=1"
        with httpx.stream("GET", url, headers=bearer.headers, timeout=60) as response:
            for line in response.iter_lines():
                if line.startswith("data: "):  # a record: the server is reading the log
                    reading.set()
        ended.set()

    follower = threading.Thread(target=follow, daemon=True)
    follower.start()
    assert reading.wait(20), "the follow delivered no record"
    started = time.monotonic()
    assert bearer.delete(f"/api/instances/{iid}").status_code == 200
    assert time.monotonic() - started < 10
    assert ended.wait(10), "the follow did not end after the instance was destroyed"


def _server_tasks(server: LiveServer) -> int:
    loop = server.server_loop
    future = asyncio.run_coroutine_threadsafe(_count_tasks(), loop)
    return future.result(5)


async def _count_tasks() -> int:
    return len(asyncio.all_tasks())
