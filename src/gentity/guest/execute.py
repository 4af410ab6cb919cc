"""Commands a client runs beside the agent (op ``exec``): on pipes, not on a terminal.

An :class:`Execution` starts one command in a session of its own, in the children's cgroup,
feeds it the stdin a client sends, passes stdout and stderr on apart (each cut at a cap, the
rest read and dropped, so the command never blocks on a full pipe) and reports how it ended.
A timeout, or the client going away, kills its whole tree: the process group, whatever else
runs in its session, and every process below it (one that called ``setsid`` is in neither
group nor session, but still its descendant). Processes it leaves in the background when it
exits on its own keep running. No threads; standard library only.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from gentity.guest import protocol as p
from gentity.guest.children import (
    ChildWatcher,
    child_setup,
    describe_exit,
    process_table,
    session_pids,
)

#: After the command exits, wait this long for the rest of its output (a background process
#: may hold the pipes open; it is not waited for).
DRAIN_GRACE: Final = 1.0
#: After a kill, wait this long for the command to be reaped.
KILL_WAIT: Final = 5.0
READ_CHUNK: Final = 65536
#: A kill stops what it finds, then looks again for what was forked meanwhile, this many times
#: at most.
MAX_KILL_ROUNDS: Final = 20

Send = Callable[[bytes, bytes], None]
"""Passes a frame on: (frame type, payload)."""


@dataclass
class _Output:
    kind: bytes
    """The frame type its bytes go out in."""
    seen: int = 0
    """Bytes read so far, passed on or not."""


class Execution:
    """One command on pipes. ``start()`` spawns it; ``wait()`` gives its :class:`ExecExit`
    once it exited and its output was passed on."""

    def __init__(
        self,
        argv: list[str],
        *,
        executable: str,
        cwd: str,
        env: dict[str, str],
        watcher: ChildWatcher,
        cgroup_fd: int | None,
        timeout: float,
        max_output: int,
        send: Send,
        on_activity: Callable[[], None],
    ) -> None:
        self._argv = argv
        self._executable = executable
        self._cwd = cwd
        self._env: dict[str, str] | None = env
        self._watcher = watcher
        self._cgroup_fd = cgroup_fd
        self._timeout = timeout
        self._max_output = max_output
        self._send = send
        self._touch = on_activity
        self._loop = asyncio.get_running_loop()
        self.pid: int | None = None
        self._reaped = False
        self.timed_out = False
        self._stdin = -1
        self._pending = bytearray()
        self._close_stdin = False
        self._outputs: dict[int, _Output] = {}
        self._truncated = {p.FRAME_OUTPUT: False, p.FRAME_STDERR: False}
        self._eof: asyncio.Future[None] = self._loop.create_future()
        self._done: asyncio.Future[p.ExecExit] = self._loop.create_future()
        self._timer: asyncio.TimerHandle | None = None

    def start(self) -> None:
        """Spawn the command. Raises OSError or SubprocessError if it cannot run."""
        stdin_r, stdin_w = os.pipe()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        ours, theirs = (stdin_w, out_r, err_r), (stdin_r, out_w, err_w)
        try:
            proc = subprocess.Popen(
                self._argv,
                executable=self._executable,
                stdin=stdin_r,
                stdout=out_w,
                stderr=err_w,
                cwd=self._cwd,
                env=self._env,
                start_new_session=True,
                preexec_fn=child_setup(self._cgroup_fd, tty=False)
                if self._cgroup_fd is not None
                else None,
            )
        except BaseException:
            for fd in ours:
                os.close(fd)
            raise
        finally:
            for fd in theirs:
                os.close(fd)
            self._env = None  # the env may hold secrets; keep no copy around
        self.pid = proc.pid
        self._touch()
        for fd in ours:
            os.set_blocking(fd, False)
        self._stdin = stdin_w
        for fd, kind in ((out_r, p.FRAME_OUTPUT), (err_r, p.FRAME_STDERR)):
            self._outputs[fd] = _Output(kind)
            self._loop.add_reader(fd, self._on_readable, fd)
        self._timer = self._loop.call_later(self._timeout, self._time_out)
        self._watcher.watch(proc, self._on_exit)

    @property
    def finished(self) -> bool:
        return self._done.done()

    async def wait(self) -> p.ExecExit:
        """How the command ended, once its output was passed on."""
        return await asyncio.shield(self._done)

    def write_stdin(self, data: bytes) -> None:
        """Queue bytes for the command's stdin; never blocks (the client sends a bounded amount)."""
        if self._stdin < 0 or not data:
            return
        had_pending = bool(self._pending)
        self._pending += data
        if not had_pending:
            self._flush_stdin()

    def close_stdin(self) -> None:
        """Close the command's stdin once what is queued has been written."""
        self._close_stdin = True
        if not self._pending:
            self._drop_stdin()

    def kill(self) -> None:
        """SIGKILL the process group, everything else in the command's session, and every
        process below the command."""
        pid = self.pid
        if pid is None or self.finished:
            return
        # Once our child is reaped its number stays taken while its group or session has
        # members; a live process by that number then means it was reused: not ours to kill.
        if self._reaped and os.path.exists(f"/proc/{pid}"):
            return
        # Stopped first, until no new one turns up, so that none forks (or is orphaned by
        # its parent's death, and so lost from the tree) while the others are killed.
        found: set[int] = set()
        for _ in range(MAX_KILL_ROUNDS):
            members = set(session_pids(pid)) | _descendants(pid)
            if not self._reaped:
                members.add(pid)
            new = members - found
            if not new:
                break
            found |= new
            with contextlib.suppress(OSError):
                os.killpg(pid, signal.SIGSTOP)
            for member in new:
                with contextlib.suppress(OSError):
                    os.kill(member, signal.SIGSTOP)
        with contextlib.suppress(OSError):
            os.killpg(pid, signal.SIGKILL)
        for member in found:
            with contextlib.suppress(OSError):
                os.kill(member, signal.SIGKILL)

    def _time_out(self) -> None:
        self.timed_out = True
        self.kill()

    def _flush_stdin(self) -> None:
        try:
            written = os.write(self._stdin, self._pending)
        except BlockingIOError:
            written = 0
        except OSError:  # EPIPE: the command closed its stdin; the rest is dropped
            self._drop_stdin()
            return
        del self._pending[:written]
        if self._pending:
            self._loop.add_writer(self._stdin, self._on_writable)
        elif self._close_stdin:
            self._drop_stdin()

    def _on_writable(self) -> None:
        self._loop.remove_writer(self._stdin)
        self._flush_stdin()

    def _drop_stdin(self) -> None:
        self._pending.clear()
        if self._stdin >= 0:
            self._loop.remove_writer(self._stdin)
            os.close(self._stdin)
            self._stdin = -1

    def _on_readable(self, fd: int) -> None:
        try:
            data = os.read(fd, READ_CHUNK)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._close_output(fd)
            return
        self._touch()
        output = self._outputs[fd]
        room = self._max_output - output.seen
        output.seen += len(data)
        if room < len(data):
            self._truncated[output.kind] = True
        if room > 0:
            self._send(output.kind, data[:room])

    def _close_output(self, fd: int) -> None:
        if self._outputs.pop(fd, None) is None:
            return
        self._loop.remove_reader(fd)
        os.close(fd)
        if not self._outputs and not self._eof.done():
            self._eof.set_result(None)

    def _on_exit(self, returncode: int) -> None:
        self._reaped = True
        if self._timer is not None:
            self._timer.cancel()
        self._drop_stdin()
        self._touch()
        self._loop.create_task(self._finish(returncode))

    async def _finish(self, returncode: int) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(DRAIN_GRACE):
                await asyncio.shield(self._eof)
        for fd in list(self._outputs):
            self._close_output(fd)
        exit_code, signal_name = describe_exit(returncode)
        self._done.set_result(
            p.ExecExit(
                exit_code,
                signal_name,
                self.timed_out,
                self._truncated[p.FRAME_OUTPUT],
                self._truncated[p.FRAME_STDERR],
            )
        )


def _descendants(root: int) -> set[int]:
    """PIDs of all processes below ``root``, by their parents (Linux /proc; empty elsewhere)."""
    children: dict[int, list[int]] = {}
    for pid, ppid, _ in process_table():
        children.setdefault(ppid, []).append(pid)
    found: set[int] = set()
    pending = [root]
    while pending:
        for child in children.get(pending.pop(), ()):
            if child not in found:
                found.add(child)
                pending.append(child)
    return found


def check_cwd(workdir: str, cwd: str | None) -> str:
    """The directory a command runs in: the workdir, or ``cwd`` in it (absolute as given).
    Raises ValueError, in plain words, if that is not a directory."""
    path = workdir if not cwd else os.path.normpath(os.path.join(workdir, cwd))
    if not os.path.isdir(path):
        raise ValueError(f"cwd {cwd!r} is not a directory")
    return path


async def wait_killed(execution: Execution) -> None:
    """Kill ``execution``'s tree and wait (bounded) until it has been reaped."""
    execution.kill()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(KILL_WAIT):
            await execution.wait()
