"""Install step, start errors, shutdown and footprint of the guest daemon."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gentity.guest.client import GuestError, open_session
from gentity.guest.logreader import tail
from tests.waiting import wait_until

from .conftest import GuestFactory, GuestProc, live_members

pytestmark = pytest.mark.anyio


def install_spec(tmp_path: Path, commands: list[list[str]], **extra: object) -> dict[str, object]:
    return {
        "lockFile": str(tmp_path / "cache" / ".lock"),
        "marker": str(tmp_path / "cache" / "agent.ok"),
        "commands": commands,
        **extra,
    }


async def test_install_failure_is_reported(guest_factory: GuestFactory, tmp_path: Path) -> None:
    guest = guest_factory(install=install_spec(tmp_path, [["false"]]))
    info = await guest.wait_for(lambda h: h["state"] == "error")
    assert info["error"] == "install failed: false exited with code 1"
    assert info["agentPid"] is None
    with pytest.raises(GuestError, match="install failed: false exited with code 1"):
        await open_session(guest.address, guest.secret)
    assert not (tmp_path / "cache" / "agent.ok").exists()
    assert ("error", "install failed: false exited with code 1") in [
        (r["level"], r["message"]) for r in tail(guest.log_path, 20)
    ]


async def test_install_failure_quotes_the_last_output_line(
    guest_factory: GuestFactory, tmp_path: Path
) -> None:
    script = "echo first; echo 'npm ERR! network down' >&2; exit 7"
    guest = guest_factory(install=install_spec(tmp_path, [["sh", "-c", script]]))
    info = await guest.wait_for(lambda h: h["state"] == "error")
    assert info["error"] == "install failed: sh exited with code 7: npm ERR! network down"


async def test_install_command_not_found(guest_factory: GuestFactory, tmp_path: Path) -> None:
    guest = guest_factory(install=install_spec(tmp_path, [["no-such-installer-xyz", "i"]]))
    info = await guest.wait_for(lambda h: h["state"] == "error")
    assert info["error"] == "install failed: no-such-installer-xyz not found"


async def test_install_runs_once_with_its_own_env(
    guest_factory: GuestFactory, tmp_path: Path
) -> None:
    script = "echo inst=$INSTALL_VAR agent=${CANARY_KEY:-absent} cwd=$(pwd); echo second"
    spec = install_spec(tmp_path, [["sh", "-c", script]], env={"INSTALL_VAR": "yes"})
    env = {"PS1": "$ ", "CANARY_KEY": "sk-canary-123"}
    guest = guest_factory(install=spec, env=env)
    await guest.wait_for(lambda h: h["state"] == "running")
    messages = [r["message"] for r in tail(guest.log_path, 50)]
    volume = guest.config["workdir"]
    assert f"install: inst=yes agent=absent cwd={volume}" in messages
    assert "install: second" in messages and "install: done" in messages
    assert (tmp_path / "cache" / "agent.ok").exists()
    guest.stop()
    # The marker exists now: a second instance skips the (now failing) commands.
    again = guest_factory(install=install_spec(tmp_path, [["false"]]), env=env)
    await again.wait_for(lambda h: h["state"] == "running")
    assert "install: already installed" in again.log_text()


async def test_install_waits_for_the_lock(guest_factory: GuestFactory, tmp_path: Path) -> None:
    import fcntl

    spec = install_spec(tmp_path, [["true"]])
    (tmp_path / "cache").mkdir()
    with open(str(spec["lockFile"]), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        guest = guest_factory(install=spec)
        await wait_until(
            lambda: "install: waiting for another install to finish" in guest.log_text(),
            "the install waits for the lock",
        )
        info = await guest.health()  # health keeps answering while blocked on the lock
        assert info["state"] == "installing"
    await guest.wait_for(lambda h: h["state"] == "running")


async def test_missing_agent_command(guest_factory: GuestFactory) -> None:
    guest = guest_factory(command=["no-such-agent-xyz", "--flag"])
    info = await guest.wait_for(lambda h: h["state"] == "error")
    assert info["error"] == "cannot start agent: no-such-agent-xyz not found"
    with pytest.raises(GuestError, match="no-such-agent-xyz not found"):
        await open_session(guest.address, guest.secret)
    assert guest.stop() == 0


async def test_agent_not_executable(guest_factory: GuestFactory, tmp_path: Path) -> None:
    volume = tmp_path / "volume"
    volume.mkdir()
    (volume / "agent.sh").write_text("#!/bin/sh\necho hi\n")
    guest = guest_factory(command=["./agent.sh"])
    info = await guest.wait_for(lambda h: h["state"] == "error")
    assert info["error"] == "cannot start agent: ./agent.sh is not executable"


def member_cmdlines(sid: int) -> set[bytes]:
    """Command lines (NUL-separated, as in /proc) of the live processes of session ``sid``."""
    found = set()
    for pid in live_members(sid):
        with contextlib.suppress(OSError):  # it may exit while we look
            found.add(Path(f"/proc/{pid}/cmdline").read_bytes())
    return found


async def test_sigterm_stops_everything(guest_factory: GuestFactory) -> None:
    guest: GuestProc = guest_factory()
    agent_pid = (await guest.wait_for(lambda h: h["state"] == "running"))["agentPid"]
    term = await guest.attach()
    # A background job (own process group, same session) and a foreground child.
    await term.send("sleep 300 & echo bg=$!\n")
    await term.expect(rb"bg=\d+")
    await term.send("sleep 400\n")
    await wait_until(
        lambda: {b"sleep\x00300\x00", b"sleep\x00400\x00"} <= member_cmdlines(agent_pid),
        "both children of the agent run",
    )
    shell = await guest.attach(op="shell")
    await shell.send("echo shell-ready\n")
    await shell.expect("shell-ready")
    start = time.monotonic()
    guest.proc.send_signal(signal.SIGTERM)
    exit_event = await term.expect_exit()
    assert exit_event.signal in ("SIGHUP", "SIGTERM", "SIGKILL")
    await shell.expect_exit()
    assert await asyncio.to_thread(guest.proc.wait, 15) == 0
    assert time.monotonic() - start < 8
    assert live_members(agent_pid) == []
    assert not os.path.exists(guest.sock_path)
    messages = [r["message"] for r in tail(guest.log_path, 10)]
    assert messages[-1] == "guest stopped" and "guest stopping" in messages
    assert guest.proc.stderr is not None and guest.proc.stderr.read() == b""


async def test_stale_socket_is_replaced(guest_factory: GuestFactory) -> None:
    import socket as socket_module

    first = guest_factory()
    path = first.sock_path
    first.proc.kill()  # no cleanup: leaves the socket file behind
    first.proc.wait()
    assert os.path.exists(path)
    second = guest_factory(listen=f"unix:{path}", secret="other-secret-xyz")
    info = await second.wait_for(lambda h: h["state"] == "running")
    assert info["pid"] == second.proc.pid
    # A live guest's socket is not stolen.
    third = guest_factory(wait=False, listen=f"unix:{path}")
    assert await asyncio.to_thread(third.proc.wait, 15) == 1
    assert third.proc.stderr is not None and b"another process" in third.proc.stderr.read()
    with socket_module.socket(socket_module.AF_UNIX) as s:
        s.connect(path)  # still served by the second guest


def test_bad_bootstrap_exits_with_a_message() -> None:
    # The old full config (with its secret) on stdin is no bootstrap: refused, never quoted.
    config = {"secret": "sk-secret-abc", "listen": "unix:/tmp/x.sock", "command": ["sh"]}
    result = subprocess.run(
        [sys.executable, "-m", "gentity.guest"],
        input=json.dumps(config).encode(),
        capture_output=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert b"invalid bootstrap: secretSha256 must be 64 hexadecimal digits" in result.stderr
    assert b"sk-secret-abc" not in result.stderr
    result = subprocess.run(
        [sys.executable, "-m", "gentity.guest"], input=b"{nope", capture_output=True, timeout=30
    )
    assert result.returncode == 2 and b"invalid bootstrap" in result.stderr
    env = {**os.environ, "GENTITY_GUEST_LISTEN": "tls:127.0.0.1:1", "GENTITY_GUEST_ECHO_LOG": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "gentity.guest"], env=env, capture_output=True, timeout=30
    )
    assert result.returncode == 2 and b"does not terminate TLS" in result.stderr


async def test_idle_rss(guest_factory: GuestFactory) -> None:
    guest = guest_factory()
    await guest.wait_for(lambda h: h["state"] == "running")
    term = await guest.attach()
    await term.send("echo warm$((1+1))\n")
    await term.expect("warm2")
    await term.close()
    await guest.wait_for(lambda h: h["viewers"] == 0)  # idle: nobody attached
    status = Path(f"/proc/{guest.proc.pid}/status").read_text()
    rss_kb = int(next(line for line in status.splitlines() if line.startswith("VmRSS:")).split()[1])
    print(f"guest idle RSS: {rss_kb} kB ({rss_kb / 1024:.1f} MiB)")
    assert rss_kb < 30 * 1024
