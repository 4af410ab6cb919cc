"""The ops around the terminal: configure, logs, follow, wait; auth and the unconfigured
guest; echoLog; the install's progress in health."""

from __future__ import annotations

import asyncio
import json
import select
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gentity.guest import client
from gentity.guest.client import GuestError
from gentity.guest.logwriter import LogWriter

from .conftest import GuestFactory, GuestProc
from .test_lifecycle import install_spec

pytestmark = pytest.mark.anyio

QUIET = ["sh", "-c", "echo started; exec sleep 600"]


async def take(stream: AsyncIterator[tuple[str, dict[str, str]]], n: int) -> list[Any]:
    """The next ``n`` items of a follow stream, within a few seconds."""
    items = []
    async with asyncio.timeout(10):
        async for item in stream:
            items.append(item)
            if len(items) == n:
                break
    return items


async def test_every_op_needs_the_secret(guest_factory: GuestFactory) -> None:
    guest = guest_factory(command=QUIET)
    wrong = guest.secret + "x"
    calls = [
        client.health(guest.address, wrong),
        client.configure(guest.address, wrong, guest.agent_config),
        client.logs(guest.address, wrong, lines=1),
        client.wait(guest.address, wrong, since=0, timeout=1),
        client.follow(guest.address, wrong, lines=1),
        client.open_session(guest.address, wrong, op="shell"),
    ]
    for call in calls:
        with pytest.raises(GuestError, match="unauthorized"):
            await call


async def test_an_unconfigured_guest_answers_health_and_configure_only(
    guest_factory: GuestFactory,
) -> None:
    guest = guest_factory(command=QUIET, configure=False)
    info = await guest.health()
    assert info["configured"] is False and info["state"] == "unconfigured"
    assert isinstance(info["version"], int)
    refused = [
        client.logs(guest.address, guest.secret, lines=1),
        client.wait(guest.address, guest.secret, since=info["version"], timeout=1),
        client.follow(guest.address, guest.secret),
        client.open_session(guest.address, guest.secret),
        client.open_session(guest.address, guest.secret, op="shell"),
    ]
    for call in refused:
        with pytest.raises(GuestError, match="not configured"):
            await call
    assert not guest.log_path.exists()  # nothing is written before the config says where

    await client.configure(guest.address, guest.secret, guest.agent_config)
    info = await guest.wait_for(lambda h: h["state"] == "running")
    assert info["configured"] is True and guest.log_path.exists()


async def test_configure_is_idempotent_and_refuses_another_config(
    guest_factory: GuestFactory,
) -> None:
    guest = guest_factory(command=QUIET, configure=False)
    with pytest.raises(GuestError, match="invalid config: workdir must be an absolute path"):
        await client.configure(guest.address, guest.secret, {**guest.agent_config, "workdir": "x"})
    await client.configure(guest.address, guest.secret, guest.agent_config)
    first = await guest.wait_for(lambda h: h["agentPid"] is not None)
    # The same config again (a retry, or the control plane after a reconnect): a no-op.
    await client.configure(guest.address, guest.secret, dict(reversed(guest.agent_config.items())))
    with pytest.raises(GuestError, match="already configured"):
        await client.configure(guest.address, guest.secret, {**guest.agent_config, "cols": 99})
    assert (await guest.health())["agentPid"] == first["agentPid"]
    assert guest.log_text().count("guest started") == 1


async def test_logs_cursor_is_exact(guest_factory: GuestFactory) -> None:
    guest = guest_factory(command=QUIET)
    await guest.wait_for(lambda h: h["agent"]["state"] == "ready")  # the guest's last record
    with LogWriter(guest.log_path) as writer:
        for n in range(5):
            writer.write("info", f"line {n}")
        records, cursor = await client.logs(guest.address, guest.secret, lines=3)
        assert [r["message"] for r in records] == ["line 2", "line 3", "line 4"]
        assert cursor == str(guest.log_path.stat().st_size)
        for n in range(5, 8):
            writer.write("info", f"line {n}")
    after = await take(await client.follow(guest.address, guest.secret, cursor=cursor), 3)
    assert [r["message"] for _, r in after] == ["line 5", "line 6", "line 7"]
    empty, zero = await client.logs(guest.address, guest.secret, lines=0)
    assert empty == [] and zero == str(guest.log_path.stat().st_size)
    with pytest.raises(GuestError, match="lines must be a count"):
        await client.logs(guest.address, guest.secret, lines=-1)


async def test_follow_replays_lines_then_resumes_without_gaps_or_repeats(
    guest_factory: GuestFactory,
) -> None:
    guest = guest_factory(command=QUIET)
    await guest.wait_for(lambda h: h["agent"]["state"] == "ready")  # the guest's last record
    with LogWriter(guest.log_path) as writer:
        writer.write_lines("info", ["a", "b", "c"])
        stream = await client.follow(guest.address, guest.secret, lines=2)
        first = await take(stream, 2)
        assert [r["message"] for _, r in first] == ["b", "c"]
        writer.write_lines("info", ["d", "e"])
        assert [r["message"] for _, r in await take(stream, 1)] == ["d"]
        await stream.aclose()  # the client goes away after "d"; "e" is already written
        writer.write("info", "f")
        resumed = await client.follow(guest.address, guest.secret, cursor=first[1][0])
        got = await take(resumed, 3)
        assert [r["message"] for _, r in got] == ["d", "e", "f"]
        await resumed.aclose()
        live = await client.follow(guest.address, guest.secret)  # no cursor, no lines: from now on
        writer.write("info", "g")
        assert [r["message"] for _, r in await take(live, 1)] == ["g"]
        await live.aclose()
    with pytest.raises(GuestError, match="cursor"):
        await client.follow(guest.address, guest.secret, cursor="²")


async def test_follow_batches_hands_out_what_arrived_together(
    guest_factory: GuestFactory,
) -> None:
    guest = guest_factory(command=QUIET)
    await guest.wait_for(lambda h: h["agent"]["state"] == "ready")  # the guest's last record
    _, end = await client.logs(guest.address, guest.secret, lines=0)
    with LogWriter(guest.log_path) as writer:
        stream = await client.follow_batches(guest.address, guest.secret, cursor=end)
        writer.write_lines("info", [f"n-{n}" for n in range(500)])
        got: list[tuple[str, dict[str, str]]] = []
        batches = 0
        async with asyncio.timeout(10):
            async for batch in stream:
                assert batch, "a batch is never empty"
                got += batch
                batches += 1
                if len(got) >= 500:
                    break
        await stream.aclose()
    assert [r["message"] for _, r in got] == [f"n-{n}" for n in range(500)]
    assert batches < 500, "records that arrived together come as one batch"
    cursors = [int(c) for c, _ in got]
    assert cursors == sorted(set(cursors)) and cursors[-1] == guest.log_path.stat().st_size
    # The same cursors as the one-record-at-a-time stream gives.
    one_by_one = await take(await client.follow(guest.address, guest.secret, cursor=end), 500)
    assert [c for c, _ in one_by_one] == [c for c, _ in got]


async def test_wait_answers_on_a_change_or_at_the_timeout(guest_factory: GuestFactory) -> None:
    guest = guest_factory(command=["sh", "-c", "read line; exit 3"], restart="never")
    info = await guest.wait_for(lambda h: h["agent"]["state"] == "ready")
    started = time.monotonic()
    same = await client.wait(guest.address, guest.secret, since=info["version"], timeout=0.5)
    assert same["version"] == info["version"] and time.monotonic() - started >= 0.45

    waiting = asyncio.ensure_future(
        client.wait(guest.address, guest.secret, since=info["version"], timeout=30)
    )
    await asyncio.sleep(0.2)
    assert not waiting.done()
    term = await guest.attach()
    started = time.monotonic()
    await term.send("go\n")
    changed = await waiting
    assert changed["version"] != info["version"] and time.monotonic() - started < 5
    final = await guest.wait_for(lambda h: h["agent"]["state"] == "crashed")
    assert final["agent"]["lastExitCode"] == 3
    await term.close()


async def test_install_progress_in_health(guest_factory: GuestFactory, tmp_path: Path) -> None:
    script = "echo fetching; sleep 2; echo unpacked"
    spec = install_spec(tmp_path, [["sh", "-c", script]], package="@acme/agent@1.2")
    guest = guest_factory(command=QUIET, install=spec)
    running = await guest.wait_for(lambda h: "fetching" in (h["install"] or {}).get("lines", []))
    install = running["install"]
    assert install["state"] == "running" and install["package"] == "@acme/agent@1.2"
    assert install["startedAt"].endswith("Z") and running["state"] == "installing"
    done = await guest.wait_for(lambda h: h["state"] == "running")
    assert done["install"]["state"] == "done"
    assert done["install"]["lines"] == ["fetching", "unpacked"]


def read_stdout_until(guest: GuestProc, needle: str, seconds: float = 10) -> list[dict[str, Any]]:
    assert guest.proc.stdout is not None
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        readable, _, _ = select.select([guest.proc.stdout], [], [], 1)
        if readable:
            seen.append(json.loads(guest.proc.stdout.readline()))
            if needle in str(seen[-1].get("message")):
                return seen
    raise AssertionError(f"{needle!r} not echoed; saw {seen}")


async def test_echo_log_copies_every_record_to_stdout(guest_factory: GuestFactory) -> None:
    guest = guest_factory(command=["sh", "-c", "echo hello-$((6*7)); exec sleep 600"], echoLog=True)
    echoed = await asyncio.to_thread(read_stdout_until, guest, "hello-42")
    records, _ = await client.logs(guest.address, guest.secret, lines=len(echoed))
    assert echoed == records
