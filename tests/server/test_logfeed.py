"""Log fan-out: the followers of an instance share one stream from its guest, join it without a
gap or a repeat, and a follower that falls behind is ended without holding the others up.

Lines are appended to the instance's log on its volume, in the guest's format, as the agent's
own output would be: that is why these tests run on the local provider only.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from gentity.guest.logformat import format_timestamp
from gentity.server.services import logfeed
from tests.conftest import LiveServer
from tests.server.test_instances import create_shell, instance_dir
from tests.waiting import wait_until

pytestmark = pytest.mark.local_only

Event = tuple[str | None, dict[str, Any]]


def append(log: Path, messages: list[str], pad: int = 0) -> None:
    """Append records to the log in one write, as the guest's log writer formats them."""
    stamp = format_timestamp()
    lines = (
        json.dumps({"timestamp": stamp, "level": "info", "message": m + "." * pad}) + "\n"
        for m in messages
    )
    with log.open("ab") as out:
        out.write("".join(lines).encode())


def log_of(server: LiveServer, iid: str) -> Path:
    return instance_dir(server.app.state.ctx.settings, iid) / "disk" / "logs" / "agent.log"


def open_handles(path: Path) -> int:
    """How many descriptors, in any process on this host, have the log open (by its inode: the
    guest sees its volume at another path)."""
    target = path.stat()
    count = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                st = os.stat(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            count += (st.st_dev, st.st_ino) == (target.st_dev, target.st_ino)
    return count


async def records(response: httpx.Response) -> AsyncIterator[Event]:
    """The (id, record) events of an SSE answer."""
    event_id: str | None = None
    data: dict[str, Any] | None = None
    async for line in response.aiter_lines():
        if line.startswith("id: "):
            event_id = line[4:]
        elif line.startswith("data: "):
            data = json.loads(line[6:])
        elif line == "" and data is not None:
            yield event_id, data
            event_id, data = None, None


class Reader:
    """One follower: reads its stream in a task, keeping every record it gets."""

    def __init__(self, api: httpx.AsyncClient, iid: str, **params: Any) -> None:
        headers = {}
        if "last_event_id" in params:
            headers["Last-Event-ID"] = params.pop("last_event_id")
        self.request = api.build_request(
            "GET",
            f"/api/instances/{iid}/logs",
            params={"follow": "1", **params},
            headers=headers,
        )
        self.api = api
        self.got: list[Event] = []
        self.ended = False
        self.error: httpx.HTTPError | None = None
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        try:
            response = await self.api.send(self.request, stream=True)
            try:
                assert response.status_code == 200
                async for event in records(response):
                    self.got.append(event)
            finally:
                await response.aclose()
        except httpx.HTTPError as exc:
            self.error = exc
        finally:
            self.ended = True

    @property
    def messages(self) -> list[str]:
        """The messages got, without the padding some tests add."""
        return [record["message"].rstrip(".") for _, record in self.got]

    async def until(self, message: str) -> None:
        try:
            await wait_until(lambda: message in self.messages or self.ended, f"{message} arrives")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; last got {self.messages[-3:]}, {self.error!r}") from None
        assert message in self.messages, f"the stream ended before {message}: {self.error!r}"

    async def close(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


def run(server: LiveServer, bearer: httpx.Client, body: Callable[[httpx.AsyncClient], Any]) -> None:
    async def main() -> None:
        async with httpx.AsyncClient(
            base_url=server.url, headers=dict(bearer.headers), timeout=30
        ) as api:
            await body(api)

    asyncio.run(main())


def consecutive(messages: list[str], prefix: str) -> list[int]:
    """The numbers of ``prefix-N`` messages, checked to follow one another with no gap."""
    numbers = [int(m.split("-")[1].rstrip(".")) for m in messages if m.startswith(prefix + "-")]
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers))), numbers
    return numbers


def test_followers_share_one_guest_stream_and_it_closes_after_the_last(
    server: LiveServer, bearer: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(logfeed, "LINGER_SECONDS", 0.2)
    iid = create_shell(bearer)["id"]
    log = log_of(server, iid)
    feeds = server.app.state.ctx.logfeeds
    alone = open_handles(log)  # the guest's log writer

    async def body(api: httpx.AsyncClient) -> None:
        followers = [Reader(api, iid, lines=1000) for _ in range(4)]
        append(log, ["shared-1"])
        for follower in followers:
            await follower.until("shared-1")
        # Four followers, one reader of the log in the guest (catch-up streams are gone).
        await wait_until(lambda: open_handles(log) == alone + 1, "one follow stream is left")
        assert len(feeds) == 1
        append(log, ["shared-2"])
        for follower in followers:
            await follower.until("shared-2")
            assert [m for m in follower.messages if m.startswith("shared-")] == [
                "shared-1",
                "shared-2",
            ]
        assert open_handles(log) == alone + 1
        for follower in followers[:3]:
            await follower.close()
        # One follower left: the feed stays open for it.
        append(log, ["shared-3"])
        await followers[3].until("shared-3")
        await followers[3].close()
        await wait_until(lambda: len(feeds) == 0, "the feed closed after its last follower")
        await wait_until(lambda: open_handles(log) == alone, "the guest closed the log")

    run(server, bearer, body)
    bearer.delete(f"/api/instances/{iid}")


def test_followers_resume_and_join_without_gap_or_repeat(
    server: LiveServer, bearer: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A small ring, so that an older cursor or many lines need a catch-up stream of their own.
    monkeypatch.setattr(logfeed, "RING_RECORDS", 20)
    iid = create_shell(bearer)["id"]
    log = log_of(server, iid)

    async def body(api: httpx.AsyncClient) -> None:
        first = Reader(api, iid, lines=1000)
        append(log, ["start"])
        await first.until("start")
        append(log, [f"m-{n}" for n in range(100)])
        await first.until("m-99")
        ids = {record["message"]: event_id for event_id, record in first.got}

        # After a record the feed still holds, and after one it no longer holds, while lines
        # keep coming; and the last 50 lines, more than the feed holds.
        recent = Reader(api, iid, last_event_id=ids["m-90"])
        old = Reader(api, iid, last_event_id=ids["m-10"])
        many = Reader(api, iid, lines=50)
        for step in range(10):
            append(log, [f"m-{n}" for n in range(100 + step * 10, 110 + step * 10)])
            await asyncio.sleep(0)
        for reader in (recent, old, many, first):
            await reader.until("m-199")
        assert consecutive(first.messages, "m") == list(range(200))
        assert consecutive(recent.messages, "m") == list(range(91, 200))
        assert consecutive(old.messages, "m") == list(range(11, 200))
        assert len(many.got) >= 50
        assert consecutive(many.messages, "m")[-1] == 199
        # Each got what the first follower got from where it started, once each, in order.
        complete = _ids_until(first.got, "m-199")
        assert [int(i) for i in complete] == sorted({int(i) for i in complete})
        for reader in (recent, old, many):
            got = _ids_until(reader.got, "m-199")
            start = complete.index(got[0])
            assert got == complete[start:]
        for reader in (first, recent, old, many):
            await reader.close()

    run(server, bearer, body)
    bearer.delete(f"/api/instances/{iid}")


def test_a_slow_follower_is_ended_and_a_fast_one_gets_everything(
    server: LiveServer, bearer: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Above one batch (up to 1 MiB goes out at once) so that a busy host, which lets a batch
    # or two pile up for the fast follower, does not end it; far below what the slow one
    # leaves unread.
    monkeypatch.setattr(logfeed, "MAX_BACKLOG_BYTES", 2 * 1024 * 1024)
    iid = create_shell(bearer)["id"]
    log = log_of(server, iid)
    total = 5000  # about 10 MB: more than the slow client's socket buffers can hold

    async def body(api: httpx.AsyncClient) -> None:
        fast = Reader(api, iid, lines=1000)
        append(log, ["begin"])
        await fast.until("begin")
        # The slow follower reads its answer's head, then nothing until the log is written.
        slow = socket.socket()
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        host, port = server.url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(sock=_connected(slow, host, port))
        writer.write(
            f"GET /api/instances/{iid}/logs?follow=1&lines=1 HTTP/1.1\r\nHost: {host}\r\n"
            f"Authorization: {bearer.headers['Authorization']}\r\n\r\n".encode()
        )
        head = await reader.readuntil(b"\r\n\r\n")
        assert b" 200 " in head.split(b"\r\n")[0]
        await asyncio.sleep(0.5)  # long enough for it to have joined the feed
        for start in range(0, total, 500):
            append(log, [f"l-{n}" for n in range(start, start + 500)], pad=2000)
        await fast.until(f"l-{total - 1}")
        assert consecutive(fast.messages, "l") == list(range(total))
        assert not fast.ended

        # The slow one now reads: it gets what was already on its way, then the end.
        body_bytes = await asyncio.wait_for(reader.read(), 30)  # up to the connection's close
        writer.close()
        events = _sse_events(body_bytes)
        got = [record["message"] for _, record in events]
        numbers = consecutive(got, "l")
        assert numbers[0] == 0 and numbers[-1] < total - 1, "the slow follower was not ended"
        assert body_bytes.endswith(b"0\r\n\r\n"), "its stream did not end cleanly"
        # Resuming where it stopped gives the rest, once each.
        resumed = Reader(api, iid, last_event_id=events[-1][0])
        await resumed.until(f"l-{total - 1}")
        assert consecutive(resumed.messages, "l") == list(range(numbers[-1] + 1, total))
        await resumed.close()
        await fast.close()

    run(server, bearer, body)
    bearer.delete(f"/api/instances/{iid}")


def _ids_until(events: list[Event], message: str) -> list[str]:
    ids = [event_id or "" for event_id, _ in events]
    return ids[: [record["message"] for _, record in events].index(message) + 1]


def _connected(sock: socket.socket, host: str, port: str) -> socket.socket:
    sock.connect((host, int(port)))
    sock.setblocking(False)
    return sock


def _sse_events(body: bytes) -> list[Event]:
    """Records of a chunked SSE answer's body (chunk framing removed)."""
    data = b""
    rest = body
    while rest:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        data += rest[:size]
        rest = rest[size + 2 :]
    events: list[Event] = []
    for block in data.decode().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "data" in fields:
            events.append((fields.get("id"), json.loads(fields["data"])))
    return events
