"""Child processes of the guest daemon: starting them, reaping them, describing how they ended.

The guest uses no threads: :class:`ChildWatcher` reaps from a SIGCHLD handler on the event
loop, and :func:`run_piped` reads a command's output from a non-blocking pipe (the control
plane, which runs installs with it too, waits for exits its own way). Standard library only.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import shutil
import signal
import subprocess
import termios
from collections.abc import Callable, Iterator, Sequence

from gentity.guest.redact import Redactor
from gentity.guest.textlines import LineLogger


class StartError(Exception):
    """A program could not be started; the message says why in plain words."""


def resolve(program: str, env: dict[str, str], cwd: str) -> str:
    """Path of ``program`` as a child in ``cwd`` with ``env`` would find it; StartError if
    it is missing or not executable (said plainly, before a fork that would only fail)."""
    if "/" in program:
        path = os.path.join(cwd, program)
        if not os.path.exists(path):
            raise StartError(f"{program} not found")
        if os.path.isdir(path) or not os.access(path, os.X_OK):
            raise StartError(f"{program} is not executable")
        return path
    found = shutil.which(program, path=env.get("PATH", os.defpath))
    if found is None:
        raise StartError(f"{program} not found")
    return found


def describe_exit(returncode: int) -> tuple[int | None, str | None]:
    """Map a Popen return code to (exitCode, signal name)."""
    if returncode >= 0:
        return returncode, None
    try:
        return None, signal.Signals(-returncode).name
    except ValueError:
        return None, f"SIG{-returncode}"


def process_table() -> Iterator[tuple[int, int, int]]:
    """``(pid, parent pid, session id)`` of every process this namespace shows (Linux /proc;
    nothing elsewhere). A process that ends while being read is left out."""
    try:
        names = os.listdir("/proc")
    except OSError:
        return
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
            # Fields after "(comm)", which may hold anything: state ppid pgrp session ...
            fields = stat[stat.rindex(b")") + 2 :].split()
            yield int(name), int(fields[1]), int(fields[3])
        except (OSError, ValueError, IndexError):
            continue


def session_pids(sid: int) -> list[int]:
    """PIDs of all processes in session ``sid`` (Linux /proc; empty elsewhere).

    Background jobs of an interactive shell live in their own process groups,
    so killing the process group alone would leave them behind.
    """
    return [pid for pid, _, session in process_table() if session == sid]


class ChildWatcher:
    """Reaps our child processes from a SIGCHLD handler on the event loop.

    Uses ``Popen.poll()`` on the registered processes only, so the exit status
    always reaches the right callback. No threads: the default asyncio watcher
    spawns one thread per child, and the daemon forks with ``preexec_fn``.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._children: dict[int, tuple[subprocess.Popen[bytes], Callable[[int], None]]] = {}
        loop.add_signal_handler(signal.SIGCHLD, self._check)

    def watch(self, proc: subprocess.Popen[bytes], callback: Callable[[int], None]) -> None:
        """Call ``callback(returncode)`` from the loop once ``proc`` has exited."""
        self._children[proc.pid] = (proc, callback)
        # It may have exited before we registered; the check is cheap.
        self._loop.call_soon(self._check)

    def exited(self, proc: subprocess.Popen[bytes]) -> asyncio.Future[int]:
        """A future that gets ``proc``'s return code once it has exited."""
        future: asyncio.Future[int] = self._loop.create_future()
        self.watch(proc, lambda code: None if future.done() else future.set_result(code))
        return future

    def close(self) -> None:
        """Remove the SIGCHLD handler."""
        self._loop.remove_signal_handler(signal.SIGCHLD)

    def _check(self) -> None:
        for pid, (proc, callback) in list(self._children.items()):
            returncode = proc.poll()
            if returncode is not None:
                del self._children[pid]
                callback(returncode)


def _acquire_controlling_tty() -> None:
    # Runs in the child after setsid() and after the PTY slave became fd 0.
    # Without this the terminal is not the child's controlling tty: no job
    # control, no SIGWINCH, and /dev/tty fails.
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def child_setup(cgroup_fd: int | None, tty: bool) -> Callable[[], None]:
    """What a child runs between fork and exec: join the children's cgroup (so the agent's
    process limit is not the guest's), then take the terminal."""

    def setup() -> None:
        if cgroup_fd is not None:
            with contextlib.suppress(OSError):
                os.write(cgroup_fd, b"0")  # "0" moves the writer itself
        if tty:
            _acquire_controlling_tty()

    return setup


async def run_piped(
    argv: Sequence[str],
    executable: str,
    *,
    cwd: str,
    env: dict[str, str],
    wait_exit: Callable[[subprocess.Popen[bytes]], asyncio.Future[int]],
    on_line: Callable[[str], None],
    stop_timeout: float = 5.0,
    cgroup_fd: int | None = None,
    redact: Redactor | None = None,
    carriage_return_ends_line: bool = False,
) -> int:
    """Run a command with stdout and stderr piped into ``on_line`` as clean lines.

    With ``carriage_return_ends_line``, a line a program rewrites in place (a progress
    counter, ``\r`` before each update) gives one line per update instead of one endless line.

    Returns the Popen return code; raises OSError if it cannot be started. The
    command gets its own session; if the caller is cancelled, its process group
    receives SIGTERM, then SIGKILL after ``stop_timeout`` seconds. Lines are
    redacted with ``redact`` (see :class:`LineLogger`). ``wait_exit`` gives a future of
    the return code: :meth:`ChildWatcher.exited` in the guest, a thread's ``wait`` in a
    process that must not take over SIGCHLD.
    """
    loop = asyncio.get_running_loop()
    read_fd, write_fd = os.pipe()
    try:
        # Popen only forks and execs; the exit is awaited through the watcher.
        proc = subprocess.Popen(  # noqa: ASYNC220
            argv,
            executable=executable,
            stdin=subprocess.DEVNULL,
            stdout=write_fd,
            stderr=write_fd,
            cwd=cwd,
            env=env,
            start_new_session=True,
            preexec_fn=child_setup(cgroup_fd, tty=False) if cgroup_fd is not None else None,
        )
    except BaseException:
        os.close(read_fd)
        raise
    finally:
        os.close(write_fd)
    exited = wait_exit(proc)
    eof: asyncio.Future[None] = loop.create_future()
    logger = LineLogger(on_line, redact=redact)

    def on_readable() -> None:
        try:
            data = os.read(read_fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            logger.feed(data.replace(b"\r", b"\n") if carriage_return_ends_line else data)
        else:
            loop.remove_reader(read_fd)
            if not eof.done():
                eof.set_result(None)

    os.set_blocking(read_fd, False)
    loop.add_reader(read_fd, on_readable)
    try:
        returncode = await asyncio.shield(exited)
        # A background grandchild may hold the pipe open: don't wait for it.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1.0):
                await eof
    finally:
        if proc.poll() is None:  # we were cancelled: stop the whole command tree
            for sig in (signal.SIGTERM, signal.SIGKILL):
                with contextlib.suppress(OSError):
                    os.killpg(proc.pid, sig)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(stop_timeout):
                        await asyncio.shield(exited)
                        break
        loop.remove_reader(read_fd)
        os.close(read_fd)
        logger.close()
    return returncode
