"""Attaching to the agent, viewers, resize, shells and secrets: real daemons and PTYs."""

from __future__ import annotations

import asyncio
import os
import socket
import stat
import time
from pathlib import Path

import pytest

from gentity.guest.client import GuestError, health, open_session
from gentity.guest.logreader import tail
from gentity.guest.session import VIEWER_QUEUE_LIMIT
from tests.waiting import wait_until

from .conftest import GuestFactory, GuestProc, Term, pid_alive

pytestmark = pytest.mark.anyio


async def test_health_and_authentication(guest_factory: GuestFactory) -> None:
    guest: GuestProc = guest_factory()
    info = await guest.wait_for(lambda h: h["state"] == "running")
    assert info["ok"] is True and info["error"] is None
    assert isinstance(info["agentPid"], int) and info["pid"] == guest.proc.pid
    assert info["restarts"] == 0 and info["viewers"] == 0 and info["rssKb"] > 0
    assert info["startedAt"].endswith("Z")
    assert stat.S_IMODE(os.stat(guest.sock_path).st_mode) == 0o600

    with pytest.raises(GuestError, match="unauthorized"):
        await health(guest.address, "wrong-secret")
    with pytest.raises(GuestError, match="unauthorized"):
        await open_session(guest.address, guest.secret + "x")

    def raw(request: bytes) -> bytes:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(10)
            s.connect(guest.sock_path)
            s.sendall(request)
            return s.makefile("rb").readline()

    assert await asyncio.to_thread(raw, b"no json\n") == (
        b'{"ok":false,"error":"bad request: request line is not valid JSON"}\n'
    )
    assert b"unauthorized" in await asyncio.to_thread(raw, b'{"op": "health"}\n')
    reply = await asyncio.to_thread(raw, f'{{"secret": "{guest.secret}", "op": "x"}}\n'.encode())
    assert b"bad request: op must be" in reply
    assert b"longer than" in await asyncio.to_thread(raw, b"x" * 70_000 + b"\n")


async def test_attach_runs_commands(guest_factory: GuestFactory) -> None:
    guest = guest_factory()
    term = await guest.attach()
    await term.send("echo $((40+2))\n")
    await term.expect(r"42\r?\n")
    info = await guest.health()
    assert info["viewers"] == 1 and info["lastActivity"] is not None
    await term.close()


async def test_two_viewers_and_replay(guest_factory: GuestFactory) -> None:
    guest = guest_factory()
    first = await guest.attach()
    await first.send("echo early$((1+1))\n")
    await first.expect("early2")
    # A later viewer first receives the replay of earlier output.
    second = await guest.attach()
    await second.expect("early2")
    await second.send("echo both$((2+3))\n")
    await first.expect("both5")
    await second.expect("both5")
    assert (await guest.health())["viewers"] == 2
    await first.close()
    await second.close()
    await guest.wait_for(lambda h: h["viewers"] == 0)


async def until_shown(
    term: Term, command: str, pattern: bytes, wanted: bytes, timeout: float = 10.0
) -> None:
    """Run ``command`` until what it prints (group 1 of ``pattern``) is ``wanted``.

    The shell learns of a resize by SIGWINCH, asynchronously: a command typed right after the
    resize may still run with the old size, a later one must see the new size.
    """
    deadline = time.monotonic() + timeout
    while True:
        await term.send(command)
        shown = (await term.expect(pattern)).group(1)
        if shown == wanted:
            return
        assert time.monotonic() < deadline, f"{command!r} still shows {shown!r}, not {wanted!r}"


async def test_resize_sets_the_terminal_size(guest_factory: GuestFactory) -> None:
    guest = guest_factory()
    term = await guest.attach(cols=100, rows=40)
    await term.send("stty size\n")
    await term.expect(r"\b40 100\r?\n")
    await term.session.resize(132, 50)
    await until_shown(term, "stty size\n", rb"\b(\d+ \d+)\r?\n", b"50 132")
    await term.session.resize(5000, 30)  # clamped to 1..1000
    await until_shown(term, "stty size\n", rb"\b(\d+ \d+)\r?\n", b"30 1000")
    # The shell itself sees SIGWINCH: bash updates $COLUMNS for the new size.
    await term.session.resize(77, 30)
    await until_shown(term, "echo cols=$COLUMNS\n", rb"cols=(\d+)", b"77")
    await term.close()


async def test_detach_does_not_kill_the_agent(guest_factory: GuestFactory) -> None:
    guest = guest_factory()
    pid = (await guest.wait_for(lambda h: h["state"] == "running"))["agentPid"]
    for _ in range(3):
        term = await guest.attach()
        await term.send("true\n")
        await term.close()
    # Once the guest has let every viewer go, a detach that killed the agent would show.
    info = await guest.wait_for(lambda h: h["viewers"] == 0)
    assert info["state"] == "running" and info["agentPid"] == pid and info["restarts"] == 0


async def test_slow_viewer_is_dropped_without_stalling_others(guest_factory: GuestFactory) -> None:
    guest = guest_factory()
    slow = await guest.attach()  # never reads from here on
    fast = await guest.attach()
    # Four times the backlog limit, in bursts of 100 kB: a viewer that keeps reading never
    # lags by the limit, one that stops reading must.
    bursts = 4 * VIEWER_QUEUE_LIMIT // 100_000
    burst = "head -c 100000 /dev/zero | tr '\\0' x; sleep 0.02"
    await fast.send(f"for i in $(seq {bursts}); do {burst}; done; echo; echo done$((1+1))\n")
    await fast.expect("done2", timeout=90)
    assert fast.output.count(b"x") >= bursts * 100_000
    await guest.wait_for(lambda h: h["viewers"] == 1)
    await slow.close()
    await fast.close()


async def test_a_viewer_that_pauses_gets_all_output_once_it_reads_again(
    guest_factory: GuestFactory,
) -> None:
    guest = guest_factory()
    term = await guest.attach()
    await term.send("head -c 3000000 /dev/zero | tr '\\0' y; echo; echo end$((2+3))\n")
    # Not reading for a second: the output backs up to the guest, which stops reading the
    # terminal (the program waits on its writes) and must start again once this viewer reads.
    await asyncio.sleep(1.0)
    await term.expect("end5", timeout=60)
    assert term.output.count(b"y") >= 3_000_000
    assert (await guest.wait_for(lambda h: h["viewers"] == 1))["viewers"] == 1
    await term.close()


async def test_agent_exit_sends_exit_frame_and_restarts(guest_factory: GuestFactory) -> None:
    guest = guest_factory()
    first_pid = (await guest.wait_for(lambda h: h["state"] == "running"))["agentPid"]
    term = await guest.attach()
    await term.send("exit 3\n")
    exit_event = await term.expect_exit()
    assert (exit_event.exit_code, exit_event.signal) == (3, None)
    info = await guest.wait_for(lambda h: h["restarts"] == 1 and h["state"] == "running")
    assert info["agentPid"] not in (None, first_pid)
    # The fresh session has a fresh replay buffer.
    term = await guest.attach()
    await term.send("echo again$((3+4))\n")
    await term.expect("again7")
    assert b"exit 3" not in term.output
    await term.close()
    messages = [(r["level"], r["message"]) for r in tail(guest.log_path, 100)]
    assert ("warn", "agent exited with code 3") in messages
    assert ("info", "restarting in 0.5s") in messages
    assert ("info", f"agent started (pid {info['agentPid']})") in messages


async def test_agent_killed_by_signal(guest_factory: GuestFactory) -> None:
    guest = guest_factory(restart="on-failure")
    term = await guest.attach()
    await term.send("kill -KILL $$\n")
    exit_event = await term.expect_exit()
    assert (exit_event.exit_code, exit_event.signal) == (None, "SIGKILL")
    await guest.wait_for(lambda h: h["restarts"] == 1 and h["state"] == "running")
    # on-failure: a clean exit is final.
    term = await guest.attach()
    await term.send("exit 0\n")
    assert (await term.expect_exit()).exit_code == 0
    await guest.wait_for(lambda h: h["state"] == "exited")


async def test_restart_never_leaves_state_exited(guest_factory: GuestFactory) -> None:
    guest = guest_factory(restart="never")
    term = await guest.attach()
    await term.send("exit 5\n")
    assert (await term.expect_exit()).exit_code == 5
    info = await guest.wait_for(lambda h: h["state"] == "exited")
    assert info["agentPid"] is None and info["restarts"] == 0
    with pytest.raises(GuestError, match="agent is not running"):
        await open_session(guest.address, guest.secret)


async def test_shell_is_private_and_dies_with_its_connection(guest_factory: GuestFactory) -> None:
    guest = guest_factory()
    agent_pid = (await guest.wait_for(lambda h: h["state"] == "running"))["agentPid"]
    viewer = await guest.attach()
    shell = await guest.attach(op="shell", cols=90, rows=20)
    await shell.send("echo shell$((1000+234)); echo pid=$$; stty size\n")
    await shell.expect("shell1234")
    shell_pid = int((await shell.expect(rb"pid=(\d+)")).group(1))
    await shell.expect(r"\b20 90\r?\n")
    assert shell_pid != agent_pid and pid_alive(shell_pid)
    assert (await guest.health())["shells"] == 1
    await shell.close()
    await wait_until(lambda: not pid_alive(shell_pid), "the shell is gone")
    await guest.wait_for(lambda h: h["shells"] == 0)
    # Nothing from the shell reached the agent's viewers or the agent's log.
    await viewer.send("echo sync$((5+5))\n")
    await viewer.expect("sync10")
    await wait_until(lambda: "sync10" in guest.log_text(), "the agent's output is logged")
    # The shell's output came first: had it leaked, the viewer and the log would hold it now.
    assert b"shell1234" not in viewer.output
    assert "shell1234" not in guest.log_text()
    assert (await guest.health())["agentPid"] == agent_pid
    await viewer.close()


async def test_shell_exit_sends_exit_frame(guest_factory: GuestFactory) -> None:
    guest = guest_factory()
    shell = await guest.attach(op="shell")
    await shell.send("exit 4\n")
    assert (await shell.expect_exit()).exit_code == 4
    await guest.wait_for(lambda h: h["shells"] == 0)


def proc_files_containing(needle: bytes, name: str) -> list[str]:
    hits = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                if needle in Path(f"/proc/{pid}/{name}").read_bytes():
                    hits.append(pid)
            except OSError:
                pass
    return hits


async def test_secrets_reach_the_agent_only(guest_factory: GuestFactory) -> None:
    canary = "sk-canary-123"
    guest = guest_factory(env={"PS1": "$ ", "CANARY_KEY": canary, "HOME": "/tmp"})
    agent_pid = (await guest.wait_for(lambda h: h["state"] == "running"))["agentPid"]
    term = await guest.attach()
    await term.send('test -n "$CANARY_KEY" && echo pre""sent\n')
    await term.expect("present")
    shell = await guest.attach(op="shell")
    await shell.send('test "$CANARY_KEY" = sk-canary-123 && echo sh""ell-has-it\n')
    await shell.expect("shell-has-it")
    assert canary.encode() in Path(f"/proc/{agent_pid}/environ").read_bytes()
    guest_environ = Path(f"/proc/{guest.proc.pid}/environ").read_bytes()
    for secret in (canary, guest.secret):
        assert secret.encode() not in guest_environ
        assert proc_files_containing(secret.encode(), "cmdline") == []
        assert secret not in guest.log_text()
    await shell.close()
    await term.close()
    guest.stop()
    assert canary not in guest.log_text() and guest.secret not in guest.log_text()


async def test_tcp_listener(guest_factory: GuestFactory) -> None:
    guest = guest_factory(listen="tcp:127.0.0.1:0")
    assert guest.address.startswith("tcp:127.0.0.1:") and not guest.address.endswith(":0")
    info = await guest.wait_for(lambda h: h["state"] == "running")
    assert info["pid"] == guest.proc.pid
    term = await guest.attach()
    await term.send("echo tcp$((2*21))\n")
    await term.expect("tcp42")
    await term.close()
    with pytest.raises(GuestError, match="unauthorized"):
        await health(guest.address, "nope")


async def test_oversized_frame_closes_the_connection(guest_factory: GuestFactory) -> None:
    guest = guest_factory()
    await guest.wait_for(lambda h: h["state"] == "running")

    def send_bad_frame() -> bytes:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(10)
            s.connect(guest.sock_path)
            s.sendall(f'{{"secret": "{guest.secret}", "op": "attach"}}\n'.encode())
            s.sendall(b"i" + (2 * 1024 * 1024).to_bytes(4, "big"))
            received = b""
            while chunk := s.recv(65536):  # the guest closes: recv returns b""
                received += chunk
            return received

    received = await asyncio.to_thread(send_bad_frame)
    assert received.startswith(b'{"ok":true}\n')
    info = await guest.wait_for(lambda h: h["viewers"] == 0)
    assert info["state"] == "running"


async def test_client_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(GuestError, match="socket does not exist"):
        await health(f"unix:{tmp_path}/missing.sock", "s")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound but not listening: refused
        with pytest.raises(GuestError, match="connection refused"):
            await health(f"tcp:127.0.0.1:{port}", "s")
    with pytest.raises(GuestError, match="invalid address"):
        await health("http://example", "s")
