"""The install-once-under-a-lock, as the control plane runs it (exits awaited in a thread, no
SIGCHLD handler); the guest's own use of it is covered in test_lifecycle.py."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from pathlib import Path

import pytest

from gentity.guest.config import InstallPlan
from gentity.guest.install import FailureCause, install_once
from gentity.guest.logreader import tail
from gentity.guest.logwriter import LogWriter
from gentity.guest.redact import Redactor

pytestmark = pytest.mark.anyio


def _wait_in_thread(process: subprocess.Popen[bytes]) -> asyncio.Future[int]:
    return asyncio.get_running_loop().run_in_executor(None, process.wait)


def _plan(tmp_path: Path, script: str) -> InstallPlan:
    return InstallPlan(
        lock_file=str(tmp_path / "agents" / "agent.lock"),
        marker=str(tmp_path / "agents" / "agent" / ".installed"),
        commands=[["sh", "-c", script]],
        env={},
    )


async def _install(plan: InstallPlan, tmp_path: Path, log: LogWriter) -> str | None:
    env = {"PATH": os.defpath}
    return await install_once(plan, cwd=str(tmp_path), env=env, log=log, wait_exit=_wait_in_thread)


def _messages(path: Path) -> list[str]:
    return [r["message"] for r in tail(path, 100)]


async def test_concurrent_first_starts_install_once(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    plan = _plan(tmp_path, f"echo run >> {runs}; sleep 1; echo fetched")
    with LogWriter(tmp_path / "a.log") as first, LogWriter(tmp_path / "b.log") as second:
        errors = await asyncio.gather(
            _install(plan, tmp_path, first), _install(plan, tmp_path, second)
        )
    assert list(errors) == [None, None]
    assert runs.read_text() == "run\n"
    assert Path(plan.marker).exists()
    logs = sorted([_messages(tmp_path / "a.log"), _messages(tmp_path / "b.log")], key=len)
    waited, installed = logs
    assert waited == [
        "install: waiting for another install to finish",
        "install: already installed",
    ]
    assert installed[-2:] == ["install: fetched", "install: done"]


async def test_failure_leaves_no_marker_and_quotes_the_redacted_last_line(
    tmp_path: Path,
) -> None:
    secret = "sk-install-canary-0123456789"
    plan = _plan(tmp_path, f"echo 'bad key {secret}' >&2; exit 3")
    with LogWriter(tmp_path / "a.log", redact=Redactor([secret])) as log:
        error = await _install(plan, tmp_path, log)
    assert error == "sh exited with code 3: bad key [redacted]"
    assert not Path(plan.marker).exists()
    assert "install: bad key [redacted]" in _messages(tmp_path / "a.log")
    assert secret not in (tmp_path / "a.log").read_text()


async def test_cancelling_stops_the_whole_command(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    plan = _plan(tmp_path, f"sleep 60 & echo $! > {pid_file}; wait")
    with LogWriter(tmp_path / "a.log") as log:
        task = asyncio.create_task(_install(plan, tmp_path, log))
        for _ in range(100):
            if pid_file.exists() and pid_file.read_text().strip():
                break
            await asyncio.sleep(0.05)
        child = int(pid_file.read_text())
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert _gone(child)
    assert not Path(plan.marker).exists()
    # The lock went with the cancelled install: the next one runs at once.
    again = _plan(tmp_path, "true")
    with LogWriter(tmp_path / "b.log") as log:
        assert await asyncio.wait_for(_install(again, tmp_path, log), 5) is None
    assert "install: done" in _messages(tmp_path / "b.log")


def _gone(pid: int) -> bool:
    """True once ``pid`` has exited (a zombie waiting for its new parent counts)."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state == b"Z":
            return True
        time.sleep(0.05)
    return False


def _cause(*lines: str) -> str:
    cause = FailureCause()
    for line in lines:
        cause.feed(line)
    return cause.describe()


def test_the_cause_of_an_npm_failure_is_its_code_not_its_last_line() -> None:
    assert (
        _cause(
            "npm http fetch GET http://127.0.0.1:1/x attempt 1 failed with ENOTFOUND",
            "npm error code ENOTFOUND",
            "npm error syscall getaddrinfo",
            "npm error network request to http://registry.example/x failed",
            "npm error A complete log of this run can be found in: /root/.npm/_logs/1-debug-0.log",
        )
        == "npm: ENOTFOUND reaching the registry"
    )
    assert (
        _cause(
            "npm error code ETARGET",
            "npm error notarget No matching version found for left-pad@9.9.9.",
            "npm error notarget In most cases you or one of your dependencies are requesting",
            "npm error A complete log of this run can be found in: /root/.npm/_logs/2-debug-0.log",
        )
        == "npm: ETARGET: notarget No matching version found for left-pad@9.9.9."
    )
    # npm 6's spelling, and an install script that failed.
    assert _cause(
        "npm ERR! code ELIFECYCLE",
        "npm ERR! errno 1",
        "npm ERR! x@1.0.0 install: `node-gyp rebuild`",
    ) == ("npm: ELIFECYCLE: x@1.0.0 install: `node-gyp rebuild`")


def test_the_cause_of_a_pip_failure_is_its_last_error() -> None:
    assert (
        _cause(
            "Collecting aider-chat==9.9",
            "ERROR: Could not find a version that satisfies the requirement aider-chat==9.9",
            "ERROR: No matching distribution found for aider-chat==9.9",
        )
        == "pip: No matching distribution found for aider-chat==9.9"
    )


def test_other_output_has_no_recognised_cause() -> None:
    assert _cause("something went wrong", "") == ""


def test_the_last_line_skips_npms_debug_log_path() -> None:
    cause = FailureCause()
    for line in ["npm ERR! network down", "npm ERR! A complete log of this run can be found in: x"]:
        cause.feed(line)
    assert cause.describe() == ""  # a detail line alone names no cause…
    assert cause.last == "npm ERR! network down"  # …and the caller quotes the real last line
