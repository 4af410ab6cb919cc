"""Reading the log: tail and follow."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

import pytest

from gentity.guest.logreader import follow, tail
from gentity.guest.logwriter import LogWriter
from tests.waiting import wait_until


def record(i: int) -> bytes:
    rec = {"timestamp": "2026-01-01T00:00:00.000Z", "level": "info", "message": f"line {i}"}
    return json.dumps(rec).encode() + b"\n"


def test_tail_on_a_few_megabytes(tmp_path: Path) -> None:
    path = tmp_path / "big.log"
    with path.open("wb") as f:
        for i in range(60_000):  # ~5 MB
            f.write(record(i))
            if i % 1000 == 0:
                f.write(b'not json at all\n{"partial": \n')
    assert path.stat().st_size > 4_000_000
    last = tail(path, 1000)
    assert [r["message"] for r in last] == [f"line {i}" for i in range(59_000, 60_000)]
    assert [r["message"] for r in tail(path, 1)] == ["line 59999"]
    assert tail(path, 0) == []


def test_tail_cost_does_not_depend_on_file_size(tmp_path: Path) -> None:
    # A 4 GiB sparse file: reading all of it would take far longer than the limit.
    path = tmp_path / "huge.log"
    with path.open("wb") as f:
        f.seek(4 << 30)
        for i in range(5000):
            f.write(record(i))
    start = time.monotonic()
    last = tail(path, 1000)
    assert time.monotonic() - start < 1.0
    assert last[0]["message"] == "line 4000" and last[-1]["message"] == "line 4999"


def test_tail_edge_cases(tmp_path: Path) -> None:
    assert tail(tmp_path / "missing.log", 10) == []
    path = tmp_path / "x.log"
    path.write_bytes(record(1) + record(2) + record(3).rstrip(b"\n"))
    assert [r["message"] for r in tail(path, 2)] == ["line 2", "line 3"]
    assert [r["message"] for r in tail(path, 10)] == ["line 1", "line 2", "line 3"]
    # An unfinished last line is not a record.
    path.write_bytes(record(1) + record(2)[:20])
    assert [r["message"] for r in tail(path, 10)] == ["line 1"]
    # Valid JSON that is not a record is skipped.
    path.write_bytes(b'{"a": 1}\n[1, 2]\n' + record(7) + b"\n\n")
    assert [r["message"] for r in tail(path, 10)] == ["line 7"]


def test_tail_skips_overlong_lines(tmp_path: Path) -> None:
    path = tmp_path / "long.log"
    path.write_bytes(record(1) + b"x" * (3 << 20) + b"\n" + record(2))
    assert [r["message"] for r in tail(path, 10)] == ["line 1", "line 2"]


def open_fds_for(path: Path) -> int:
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") == str(path):
                count += 1
        except OSError:
            pass
    return count


@pytest.mark.anyio
async def test_follow_yields_appended_records(tmp_path: Path) -> None:
    path = tmp_path / "agent.log"
    path.write_bytes(record(0))  # existing content is not yielded
    stream = follow(path, poll_interval=0.02)
    got: list[str] = []

    async def consume() -> None:
        async for rec in stream:
            got.append(rec["message"])
            if len(got) == 4:
                return

    task = asyncio.create_task(consume())
    await wait_until(lambda: open_fds_for(path) == 1, "the follower has the log open")
    with path.open("ab") as f:
        f.write(record(1))
        f.flush()
        await wait_until(lambda: got == ["line 1"], "the appended record is yielded")
        f.write(record(2)[:10])  # partial line: must wait for its newline
        f.flush()
        # The sleep is the point: several poll intervals pass and the partial line stays back.
        await asyncio.sleep(0.1)
        assert got == ["line 1"]
        f.write(record(2)[10:])
        f.flush()
    await wait_until(lambda: len(got) == 2, "the completed line is yielded")
    path.write_bytes(record(3))  # truncated and rewritten
    await wait_until(lambda: len(got) == 3, "the rewritten file's record is yielded")
    replacement = tmp_path / "new.log"
    replacement.write_bytes(record(4))
    replacement.replace(path)  # replaced: new inode
    await asyncio.wait_for(task, 5)
    assert got == ["line 1", "line 2", "line 3", "line 4"]
    assert open_fds_for(path) == 1  # still open: the generator was not closed yet
    await stream.aclose()
    assert open_fds_for(path) == 0


@pytest.mark.anyio
async def test_follow_waits_for_the_file_and_closes_on_break(tmp_path: Path) -> None:
    path = tmp_path / "later.log"

    async def first() -> str:
        async for rec in follow(path, poll_interval=0.02):
            return str(rec["message"])
        raise AssertionError("unreachable")

    task = asyncio.create_task(first())
    await asyncio.sleep(0.1)  # the point: the follower polls a file that does not exist yet
    with LogWriter(path) as log:
        log.write("info", "created later")
    assert await asyncio.wait_for(task, 5) == "created later"
    # Leaving the loop early closes the generator from the event loop's finalizer.
    await wait_until(lambda: open_fds_for(path) == 0, "the abandoned follower closed the file")


@pytest.mark.anyio
async def test_follow_cancellation_closes_the_file(tmp_path: Path) -> None:
    path = tmp_path / "agent.log"
    path.write_bytes(b"")
    stream = follow(path, poll_interval=0.02)
    task = asyncio.create_task(stream.__anext__())
    await wait_until(lambda: open_fds_for(path) == 1, "the follower has the log open")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await stream.aclose()
    assert open_fds_for(path) == 0
