"""``exec``: commands on pipes beside the agent, against real daemons and processes."""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from gentity.guest.client import ExecExit, ExecOutput, GuestError, GuestRefused, open_exec
from tests.waiting import wait_until

from .conftest import GuestFactory, GuestProc, live_members, pid_alive

pytestmark = pytest.mark.anyio


@dataclass
class Ran:
    end: ExecExit
    stdout: bytes = b""
    stderr: bytes = b""
    order: list[str] = field(default_factory=list)


async def run(guest: GuestProc, command: list[str], **kwargs: Any) -> Ran:
    out = {"stdout": bytearray(), "stderr": bytearray()}
    order: list[str] = []
    async with asyncio.timeout(30):
        async with await open_exec(guest.address, guest.secret, command, **kwargs) as ex:
            while (event := await ex.read()) is not None:
                if isinstance(event, ExecOutput):
                    out[event.stream] += event.data
                    order.append(event.stream)
                else:
                    return Ran(event, bytes(out["stdout"]), bytes(out["stderr"]), order)
    raise AssertionError("no exit frame")


async def test_streams_exit_code_stdin_env_and_cwd(guest_factory: GuestFactory) -> None:
    guest = guest_factory()
    ran = await run(
        guest,
        ["sh", "-c", 'cat; echo "to err $FOO" >&2; pwd; echo "$PS1"; exit 3'],
        stdin=b"\x00\xff binary in\n",
        env={"FOO": "bar"},
    )
    assert ran.end.exit_code == 3 and ran.end.signal is None and not ran.end.timed_out
    workdir = guest.config["workdir"]
    # The agent's environment (PS1 from the config) is there, stdin arrived byte for byte.
    assert ran.stdout == b"\x00\xff binary in\n" + f"{workdir}\n$ \n".encode()
    assert ran.stderr == b"to err bar\n"
    Path(workdir, "sub").mkdir()
    assert (await run(guest, ["pwd"], cwd="sub")).stdout == f"{workdir}/sub\n".encode()
    assert (await run(guest, ["pwd"], cwd="/")).stdout == b"/\n"
    # The agent is untouched: still running, nothing of the commands in its log.
    assert (await guest.health())["state"] == "running"
    assert "to err" not in guest.log_text()


async def test_signal_and_refusals(guest_factory: GuestFactory) -> None:
    guest = guest_factory()
    ran = await run(guest, ["sh", "-c", "kill -TERM $$"])
    assert ran.end.exit_code is None and ran.end.signal == "SIGTERM"
    with pytest.raises(GuestRefused, match="no-such-program not found") as refused:
        await open_exec(guest.address, guest.secret, ["no-such-program"])
    assert refused.value.reason == "invalid"
    with pytest.raises(GuestRefused, match="is not a directory"):
        await open_exec(guest.address, guest.secret, ["true"], cwd="missing")
    with pytest.raises(GuestRefused, match="timeout"):
        await open_exec(guest.address, guest.secret, ["true"], run_timeout=0)
    with pytest.raises(GuestRefused, match="too long"):
        await open_exec(guest.address, guest.secret, ["echo", "x" * 100_000])
    with pytest.raises(GuestError, match="unauthorized"):
        await open_exec(guest.address, "wrong", ["true"])


async def test_output_cap_keeps_draining_and_flags(guest_factory: GuestFactory) -> None:
    guest = guest_factory()
    # 4 MiB through a 64 KiB pipe: it only finishes if the guest keeps reading past the cap.
    script = "head -c 4194304 /dev/zero; echo done >&2"
    ran = await run(guest, ["sh", "-c", script], max_output=100_000)
    assert ran.end.exit_code == 0
    assert ran.stdout == b"\x00" * 100_000 and ran.stderr == b"done\n"
    assert ran.end.stdout_truncated and not ran.end.stderr_truncated


async def test_timeout_kills_the_whole_tree(guest_factory: GuestFactory, tmp_path: Path) -> None:
    guest = guest_factory()
    pids = tmp_path / "pids"
    # The shell ignores SIGTERM and leaves a sleep in the background: both must go.
    script = f"trap '' TERM; sleep 300 & echo $! > {pids}; echo $$ >> {pids}; wait"
    ran = await run(guest, ["sh", "-c", script], run_timeout=1.0)
    assert ran.end.timed_out and ran.end.signal == "SIGKILL" and ran.end.exit_code is None
    sleeper, shell = (int(n) for n in pids.read_text().split())
    await wait_until(lambda: not pid_alive(sleeper) and not pid_alive(shell), "the tree is gone")
    assert live_members(shell) == []


async def test_timeout_kills_descendants_that_left_the_session(
    guest_factory: GuestFactory, tmp_path: Path
) -> None:
    guest = guest_factory()
    pids = tmp_path / "pids"
    # ``setsid`` puts the sleep in a session (and group) of its own: it is found by parent.
    script = f"setsid sh -c 'echo $$ > {pids}; exec sleep 300' & wait"
    ran = await run(guest, ["sh", "-c", script], run_timeout=1.0)
    assert ran.end.timed_out
    sleeper = int(pids.read_text())
    await wait_until(lambda: not pid_alive(sleeper), "the sleep in its own session is gone")


async def test_closing_the_connection_kills_the_command(
    guest_factory: GuestFactory, tmp_path: Path
) -> None:
    guest = guest_factory()
    pids = tmp_path / "pids"
    script = f"sleep 300 & echo $! > {pids}; echo started; wait"
    ex = await open_exec(guest.address, guest.secret, ["sh", "-c", script])
    event = await ex.read()
    assert isinstance(event, ExecOutput) and event.data == b"started\n"
    assert (await guest.health())["execs"] == 1
    sleeper = int(pids.read_text())
    assert pid_alive(sleeper)
    await ex.close()
    await wait_until(lambda: not pid_alive(sleeper), "the background sleep is killed")
    await guest.wait_for(lambda h: h["execs"] == 0)


async def test_background_process_does_not_hold_the_answer(guest_factory: GuestFactory) -> None:
    guest = guest_factory()
    # The command exits at once; its background child keeps stdout open and is left running.
    ran = await run(guest, ["sh", "-c", "sleep 30 & echo $!"])
    assert ran.end.exit_code == 0
    sleeper = int(ran.stdout)
    assert pid_alive(sleeper)
    os.kill(sleeper, 9)


async def test_exec_counts_as_activity(guest_factory: GuestFactory) -> None:
    guest = guest_factory(command=["sleep", "600"])
    before = (await guest.wait_for(lambda h: h["state"] == "running"))["lastActivity"]
    assert before is None
    await run(guest, ["true"])
    assert (await guest.health())["lastActivity"] is not None


async def test_stdin_and_stdout_flow_together(guest_factory: GuestFactory) -> None:
    guest = guest_factory()
    data = os.urandom(3 * 1024 * 1024)
    # More than a pipe holds each way: only works if the guest writes and reads at once.
    ran = await run(guest, ["cat"], stdin=data)
    assert ran.end.exit_code == 0 and ran.stdout == data
    # A command that reads none of its input still ends, with its output.
    ran = await run(guest, ["sh", "-c", "echo ignored input"], stdin=data)
    assert ran.end.exit_code == 0 and ran.stdout == b"ignored input\n"
    ran = await run(guest, ["head", "-c", "5"], stdin=data)
    assert ran.end.exit_code == 0 and ran.stdout == data[:5]
