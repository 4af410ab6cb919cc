"""Installing an agent's CLI once for everyone who shares the result, with progress in a log.

One implementation for both places an install runs: the guest, inside a machine whose disk
holds the install, and the local provider, which installs into a cache on the host that it
then mounts read-only into every sandbox (so no instance can change another's binaries).
A file lock makes concurrent first starts wait for a single install; a marker written after
the last command succeeded makes later starts skip it.

The lock is tried without blocking, every half second, so the event loop (and the guest's
health answers) keep going while another install runs. Standard library only.
"""

from __future__ import annotations

import asyncio
import fcntl
import itertools
import os
import re
import shlex
import subprocess
from collections.abc import Callable
from typing import Final

from gentity.guest.children import StartError, describe_exit, resolve, run_piped
from gentity.guest.config import InstallPlan
from gentity.guest.logformat import format_timestamp
from gentity.guest.logwriter import LogWriter

LOCK_RETRY: Final = 0.5


async def install_once(
    plan: InstallPlan,
    *,
    cwd: str,
    env: dict[str, str],
    log: LogWriter,
    wait_exit: Callable[[subprocess.Popen[bytes]], asyncio.Future[int]],
    cgroup_fd: int | None = None,
    on_line: Callable[[str], None] | None = None,
    wrap: Callable[[list[str]], list[str]] | None = None,
    publish: Callable[[], str | None] | None = None,
) -> str | None:
    """Run the plan's commands unless its marker exists; returns the error, or None.

    The commands run in ``cwd`` with exactly ``env``; each output line goes to ``log``
    as ``install: …``, redacted like every record of that log, and to ``on_line`` (the
    guest's progress report). Cancelling stops the running command's whole process group.

    ``wrap`` gives the command line that actually runs a command (the local provider's
    sandbox around it); the log names the command itself. ``publish``, called under the lock
    once every command succeeded, puts the result and its marker in place instead of the
    marker being written here; it returns the error, or None.
    """
    try:
        lock = _open_lock(plan)
    except OSError as exc:
        return f"cannot open lock file {plan.lock_file}: {exc.strerror}"
    try:
        for attempt in itertools.count():
            if _try_lock(lock):
                break
            if attempt == 0:
                log.write("info", "install: waiting for another install to finish")
            await asyncio.sleep(LOCK_RETRY)
        if _marker_exists(plan.marker):
            log.write("info", "install: already installed")
            return None
        for argv in plan.commands:
            error = await _run(argv, cwd, env, log, wait_exit, cgroup_fd, on_line, wrap)
            if error is not None:
                return error
        if publish is None:
            _write_marker(plan.marker)
        elif (error := publish()) is not None:
            return error
        log.write("info", "install: done")
        return None
    finally:
        os.close(lock)  # also releases the flock


async def _run(
    argv: list[str],
    cwd: str,
    env: dict[str, str],
    log: LogWriter,
    wait_exit: Callable[[subprocess.Popen[bytes]], asyncio.Future[int]],
    cgroup_fd: int | None,
    on_line: Callable[[str], None] | None,
    wrap: Callable[[list[str]], list[str]] | None = None,
) -> str | None:
    name = os.path.basename(argv[0])
    started = argv if wrap is None else wrap(argv)
    try:
        if wrap is None or "/" not in argv[0]:
            resolve(argv[0], env, cwd)  # "npm not found", said plainly
        exe = resolve(started[0], env, cwd)
    except StartError as exc:
        return str(exc)
    log.write("info", f"install: running {shlex.join(argv)}")
    cause = FailureCause()

    def note(line: str) -> None:
        cause.feed(line)
        log.write("info", f"install: {line}")
        if on_line is not None:
            on_line(line)

    try:
        returncode = await run_piped(
            started,
            exe,
            cwd=cwd,
            env=env,
            wait_exit=wait_exit,
            on_line=note,
            cgroup_fd=cgroup_fd,
            redact=log.redact,
        )
    except OSError as exc:
        return f"{name} could not be started: {(exc.strerror or str(exc)).lower()}"
    if returncode == 0:
        return None
    code, sig_name = describe_exit(returncode)
    what = f"{name} exited with code {code}" if sig_name is None else f"{name} killed by {sig_name}"
    # Lines arrive redacted (run_piped applies the log's redactor), so the error can quote one.
    return cause.describe() or (f"{what}: {cause.last}" if cause.last else what)


#: npm's error codes for a registry it could not reach (DNS, refused, reset, timed out).
_NETWORK_CODES: Final = frozenset(
    {"ECONNREFUSED", "ECONNRESET", "ENOTFOUND", "EAI_AGAIN", "ETIMEDOUT", "ENETUNREACH"}
)
_NPM_ERROR: Final = re.compile(r"npm (?:error|ERR!) ?(.*)")
# npm lines that say where or how, not what went wrong.
_NPM_DETAIL_KEYS: Final = ("code ", "syscall ", "errno ", "path ", "signal ", "network ")
_NPM_NOISE: Final = ("A complete log of this run", "Log files were not written")


class FailureCause:
    """Picks the cause of an installer's failure out of its output, as the installer wrote it.

    npm ends with the path of its debug log, and pip with a summary: the last line is rarely
    the cause. npm's cause is its ``npm error code E…`` with the first line that explains it;
    pip's is its last ``ERROR:`` line, and the index it could not reach when it retried.
    Other programs: none (the caller quotes their last line).
    """

    def __init__(self) -> None:
        self.last = ""
        self.npm_code = ""
        self.npm_lines: list[str] = []
        self.pip_error = ""
        self.pip_unreachable = False

    def feed(self, line: str) -> None:
        text = line.strip()
        if not text:
            return
        if _NPM_NOISE[0] not in text and _NPM_NOISE[1] not in text:
            self.last = text
        if match := _NPM_ERROR.match(text):
            detail = match.group(1).strip()
            if detail.startswith("code ") and not self.npm_code:
                self.npm_code = detail.removeprefix("code ").strip()
            elif detail and not detail.startswith(_NPM_DETAIL_KEYS + _NPM_NOISE):
                self.npm_lines.append(detail)
            return
        if text.startswith("ERROR: "):
            self.pip_error = text.removeprefix("ERROR: ").strip()
        elif text.startswith("WARNING: Retrying") and "connection" in text.lower():
            self.pip_unreachable = True

    def describe(self) -> str:
        """The cause in one line, or "" when the output held none."""
        if self.npm_code in _NETWORK_CODES:
            return f"npm: {self.npm_code} reaching the registry"
        if self.npm_code or self.npm_lines:
            head = f"npm: {self.npm_code}" if self.npm_code else "npm"
            return f"{head}: {self.npm_lines[0]}" if self.npm_lines else head
        if self.pip_error:
            unreachable = "; the package index could not be reached" if self.pip_unreachable else ""
            return f"pip: {self.pip_error}{unreachable}"
        return ""


# Small synchronous helpers, kept out of async functions on purpose: they touch only local
# files and return at once.


def _open_lock(plan: InstallPlan) -> int:
    for path in (plan.lock_file, plan.marker):
        os.makedirs(os.path.dirname(path), exist_ok=True)
    return os.open(plan.lock_file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _marker_exists(path: str) -> bool:
    return os.path.exists(path)


def _write_marker(path: str) -> None:
    with open(path, "w") as f:
        f.write(format_timestamp() + "\n")
