"""Preparing the instance before the agent starts: its working directory, its seeded config
files and a cloned repository, with progress lines (``prepare: …``) in the instance's log.

The working directory is made on every start (the agent starts in it). The rest happens until
it has once succeeded, as recorded by a marker in the home: a file is written only where none
exists (never over the user's edits, nor through a symlink), mode 0600; the repository is
cloned only into an empty working directory, and without one an empty working directory is
made a new git repository when the agent asks for it (``gitInit``). A failed clone is the
agent's error, said in plain words; git never waits for a password
(``GIT_TERMINAL_PROMPT=0``) and gives up on a connection that stalls. Standard library only.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
from collections.abc import Callable
from typing import Final
from urllib.parse import urlsplit

from gentity.guest.children import StartError, describe_exit, resolve, run_piped
from gentity.guest.logwriter import LogWriter
from gentity.guest.seeds import PreparePlan, render

#: Written in the home once everything was prepared: later starts only make the workdir.
MARKER: Final = ".gentity/prepared"
# A clone that moves fewer than this many bytes a second for this long has stalled.
_LOW_SPEED_BYTES: Final = 1000
_LOW_SPEED_SECONDS: Final = 60
_PROGRESS = re.compile(r"(?:remote: )?([A-Za-z ]+):\s+(\d{1,3})% ")


async def prepare(
    plan: PreparePlan,
    *,
    home: str,
    workdir: str,
    env: dict[str, str],
    log: LogWriter,
    wait_exit: Callable[[subprocess.Popen[bytes]], asyncio.Future[int]],
    cgroup_fd: int | None = None,
) -> str | None:
    """Prepare the instance; returns the error for the agent, or None."""
    try:
        os.makedirs(workdir, mode=0o755, exist_ok=True)
    except OSError as exc:
        return f"cannot create the working directory {workdir}: {exc.strerror}"
    marker = os.path.join(home, MARKER)
    if _exists(marker):
        return None
    values = {**plan.values, "home": home, "workdir": workdir}
    for seed in plan.files:
        shown = f"~/{seed.path}"
        try:
            written = _write_new(os.path.join(home, seed.path), render(seed, values))
        except (OSError, ValueError) as exc:
            return f"cannot write {shown}: {getattr(exc, 'strerror', None) or exc}"
        log.write("info", f"prepare: wrote {shown}" if written else f"prepare: kept {shown}")
    if plan.repo is not None:
        error = await _clone(plan.repo, workdir, env, log, wait_exit, cgroup_fd)
        if error is not None:
            return error
    elif plan.git_init:
        await _init_repo(workdir, env, log, wait_exit, cgroup_fd)
    try:
        _write_new(marker, b"")
    except OSError as exc:
        return f"cannot write ~/{MARKER}: {exc.strerror}"
    return None


class _Progress:
    """Which of git's progress updates (``Receiving objects:  42% (420/1000)``, one per
    percent) go into the log: each phase's first, every tenth percent, and its last."""

    def __init__(self) -> None:
        self._phase = ""
        self._logged = -1

    def worth_logging(self, line: str) -> bool:
        match = _PROGRESS.match(line)
        if match is None:
            return True
        phase, percent = match.group(1), int(match.group(2))
        if phase != self._phase or percent >= self._logged + 10 or "done" in line:
            self._phase, self._logged = phase, percent
            return True
        return False


# Small synchronous helpers, kept out of async functions on purpose: they touch only local
# files and return at once.


def _exists(path: str) -> bool:
    return os.path.lexists(path)


def _is_empty(directory: str) -> bool:
    return not os.listdir(directory)


def _write_new(path: str, data: bytes) -> bool:
    """Write ``path`` only if nothing (not even a dangling symlink) is there; whether it did."""
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return True


async def _init_repo(
    workdir: str,
    env: dict[str, str],
    log: LogWriter,
    wait_exit: Callable[[subprocess.Popen[bytes]], asyncio.Future[int]],
    cgroup_fd: int | None,
) -> None:
    """``git init`` in the empty working directory. Not having git is no reason to keep the
    agent from starting: a failure is a warning in the log."""
    if not _is_empty(workdir):
        log.write("info", f"prepare: {workdir} is not empty; no git repository is made")
        return
    try:
        exe = resolve("git", env, workdir)
    except StartError:
        log.write("warn", "prepare: git is not installed; no git repository is made")
        return
    output: list[str] = []
    argv = ["git", "-c", "init.defaultBranch=main", "init", "--quiet", "--", workdir]
    try:
        returncode = await run_piped(
            argv,
            exe,
            cwd=workdir,
            env={**env, "GIT_TERMINAL_PROMPT": "0"},
            wait_exit=wait_exit,
            on_line=output.append,
            cgroup_fd=cgroup_fd,
            redact=log.redact,
        )
    except OSError as exc:
        log.write("warn", f"prepare: git init failed: {(exc.strerror or str(exc)).lower()}")
        return
    if returncode != 0:
        reason = next((line for line in reversed(output) if line.strip()), "")
        log.write("warn", f"prepare: git init failed (code {returncode}): {reason}")
        return
    log.write("info", f"prepare: made {workdir} a git repository")


async def _clone(
    url: str,
    workdir: str,
    env: dict[str, str],
    log: LogWriter,
    wait_exit: Callable[[subprocess.Popen[bytes]], asyncio.Future[int]],
    cgroup_fd: int | None,
) -> str | None:
    if not _is_empty(workdir):
        log.write("info", f"prepare: {workdir} is not empty; {url} is not cloned")
        return None
    git_env = {
        **env,
        "GIT_TERMINAL_PROMPT": "0",  # a private repository fails instead of asking
        "GIT_ASKPASS": "",
        "SSH_ASKPASS": "",
        # Only the URL's own transport, also for redirects and anything the clone refers to.
        "GIT_ALLOW_PROTOCOL": urlsplit(url).scheme,
    }
    argv = [
        "git",
        "-c",
        f"http.lowSpeedLimit={_LOW_SPEED_BYTES}",
        "-c",
        f"http.lowSpeedTime={_LOW_SPEED_SECONDS}",
        "clone",
        "--progress",
        "--",
        url,
        workdir,
    ]
    try:
        exe = resolve("git", git_env, workdir)
    except StartError:
        return "cannot clone the repository: git is not installed in the instance"
    log.write("info", f"prepare: cloning {url} into {workdir}")
    # git's first "fatal:" line says what went wrong; its last one only suggests what to check.
    reason = [""]
    progress = _Progress()

    def on_line(line: str) -> None:
        if not line.strip() or not progress.worth_logging(line):
            return
        if not reason[0] or (line.startswith("fatal: ") and not reason[0].startswith("fatal: ")):
            reason[0] = line
        log.write("info", f"prepare: git: {line}")

    try:
        returncode = await run_piped(
            argv,
            exe,
            cwd=workdir,
            env=git_env,
            wait_exit=wait_exit,
            on_line=on_line,
            cgroup_fd=cgroup_fd,
            redact=log.redact,
            carriage_return_ends_line=True,
        )
    except OSError as exc:
        return f"cannot clone the repository: {(exc.strerror or str(exc)).lower()}"
    if returncode != 0:
        code, sig = describe_exit(returncode)
        how = f"git exited with code {code}" if sig is None else f"git was killed by {sig}"
        return f"cloning {url} failed ({how})" + (f": {reason[0]}" if reason[0] else "")
    log.write("info", f"prepare: cloned {url}")
    return None
