"""PTY sessions for the guest daemon: the agent's terminal and private shells.

A :class:`PtySession` runs one process on a pseudo-terminal, keeps a replay
ring buffer, fans output out to attached :class:`Viewer` connections, and can
feed a :class:`LineLogger` that turns terminal output into clean log lines.
All PTY I/O is non-blocking and driven by the event loop. Standard library only.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import signal
import struct
import subprocess
import termios
import time
from collections.abc import Callable, Sequence
from typing import Final

from gentity.guest import protocol
from gentity.guest.children import ChildWatcher, child_setup, describe_exit, session_pids
from gentity.guest.replay import ReplayBuffer
from gentity.guest.textlines import LineLogger

#: Pending output a viewer may lag behind before it is dropped.
VIEWER_QUEUE_LIMIT: Final = 4 * 1024 * 1024
#: Flow control: reading the PTY pauses while a viewer has more than HIGH_WATER bytes queued
#: and resumes as soon as every viewer is below LOW_WATER (the transport says when, nothing
#: polls), so fast output runs at the pace of its viewers (the program blocks on its writes,
#: as on any terminal). A viewer that stays stuck for STALL_LIMIT seconds is dropped instead,
#: so it cannot freeze the agent for everyone.
HIGH_WATER: Final = 1024 * 1024
LOW_WATER: Final = 256 * 1024
STALL_LIMIT: Final = 5.0
#: One os.read() of the PTY, and how much to gather from it before passing output on.
READ_CHUNK: Final = 65536
READ_BATCH: Final = 256 * 1024
#: Pending input for a process that does not read its terminal; more is dropped.
INPUT_QUEUE_LIMIT: Final = 1024 * 1024
#: After the process exits, wait this long for the rest of its output.
DRAIN_GRACE: Final = 0.5
#: A full-screen program redraws when its terminal changes size; on attach the size dips by
#: one row for this long, so the new viewer gets a whole screen, not just recent changes.
REDRAW_DIP: Final = 0.05


class Viewer:
    """One attached connection that receives output frames.

    The transport's write buffer is the viewer's queue: writes never block, and
    a viewer that lets more than ``limit`` bytes pile up is dropped so it cannot
    stall the agent or the other viewers.
    """

    def __init__(self, writer: asyncio.StreamWriter, limit: int = VIEWER_QUEUE_LIMIT) -> None:
        self._writer = writer
        self._limit = limit
        # The transport tells the writer when its backlog falls below LOW_WATER again:
        # what :meth:`drained` waits for.
        writer.transport.set_write_buffer_limits(high=HIGH_WATER, low=LOW_WATER)

    @property
    def closed(self) -> bool:
        """True once the connection is closing or was dropped."""
        return self._writer.is_closing()

    @property
    def backlog(self) -> int:
        """Bytes written to this viewer and not yet taken by it."""
        return 0 if self.closed else self._writer.transport.get_write_buffer_size()

    async def drained(self) -> None:
        """Return once the backlog is at most LOW_WATER, or the viewer is gone."""
        with contextlib.suppress(OSError):  # gone: nothing left to wait for
            await self._writer.drain()

    def drop(self) -> None:
        """Disconnect at once, discarding the backlog."""
        self._writer.transport.abort()

    def send_output(self, data: bytes) -> bool:
        """Queue output frames; False if the viewer is gone or was just dropped."""
        if self.closed:
            return False
        for chunk in protocol.chunks(data):
            self._writer.write(protocol.encode_frame(protocol.FRAME_OUTPUT, chunk))
        if self._writer.transport.get_write_buffer_size() > self._limit:
            self._writer.transport.abort()  # too slow: drop it, discarding its backlog
            return False
        return True

    def send_exit(self, exit_code: int | None, signal_name: str | None) -> None:
        """Send the exit frame, then close once it is flushed."""
        if not self.closed:
            self._writer.write(protocol.encode_exit(exit_code, signal_name))
        self.close()
        # A client that stops reading would keep the connection open forever.
        asyncio.get_running_loop().call_later(5.0, self._writer.transport.abort)

    def close(self) -> None:
        """Close the connection after flushing what is queued."""
        if not self._writer.is_closing():
            self._writer.close()


class PtySession:
    """A process running on a pseudo-terminal.

    ``start()`` spawns it in a new session with the PTY as its controlling
    terminal. Output goes to the replay buffer, every viewer and the optional
    line logger. ``wait()`` returns (exitCode, signal) after the process has
    exited and its output was drained; viewers then get an exit frame.
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        executable: str,
        cwd: str,
        env: dict[str, str],
        cols: int,
        rows: int,
        watcher: ChildWatcher,
        cgroup_fd: int | None = None,
        replay_bytes: int = 0,
        logger: LineLogger | None = None,
        on_activity: Callable[[], None] | None = None,
        on_output: Callable[[bytes], None] | None = None,
    ) -> None:
        self._argv = list(argv)
        self._executable = executable
        self._cwd = cwd
        self._env: dict[str, str] | None = env
        self._size = (cols, rows)
        self._watcher = watcher
        self._cgroup_fd = cgroup_fd
        self.replay = ReplayBuffer(replay_bytes) if replay_bytes > 0 else None
        self._logger = logger
        self._on_activity = on_activity
        self._on_output = on_output
        self.viewers: set[Viewer] = set()
        self.pid: int | None = None
        self.started_at: float | None = None
        self.returncode: int | None = None
        self._master = -1
        self._pending_input = bytearray()
        self._grace: asyncio.TimerHandle | None = None
        self._resume: asyncio.Task[None] | None = None
        self._loop = asyncio.get_running_loop()
        self._done: asyncio.Future[tuple[int | None, str | None]] = self._loop.create_future()

    @property
    def finished(self) -> bool:
        """True once the process exited and viewers were told."""
        return self._done.done()

    def start(self) -> None:
        """Spawn the process. Raises OSError if it cannot be executed."""
        master, slave = os.openpty()
        try:
            self._set_winsize(master, *self._size)
            proc = subprocess.Popen(
                self._argv,
                executable=self._executable,
                stdin=slave,
                stdout=slave,
                stderr=slave,
                cwd=self._cwd,
                env=self._env,
                start_new_session=True,
                preexec_fn=child_setup(self._cgroup_fd, tty=True),
            )
        except BaseException:
            os.close(master)
            raise
        finally:
            # Our copy of the slave must go, or the master never reports EOF.
            os.close(slave)
            self._env = None  # the env may hold secrets; keep no copy around
        os.set_blocking(master, False)
        self._master = master
        self.pid = proc.pid
        self.started_at = time.time()
        self._loop.add_reader(master, self._on_readable)
        self._watcher.watch(proc, self._on_child_exit)

    def attach(self, viewer: Viewer) -> None:
        """Send the replay buffer to the viewer, then stream live output to it.

        The replay never holds a terminal query (see :mod:`gentity.guest.replay`). A
        full-screen program is asked to redraw, since the oldest part of its screen may
        have fallen out of the buffer.
        """
        replay = self.replay
        if replay is not None:
            if len(replay) and not viewer.send_output(replay.getvalue()):
                return
            if replay.full_screen:
                self.redraw()
        self.viewers.add(viewer)

    def redraw(self) -> None:
        """Make a full-screen program repaint: shrink the terminal by a row, then restore it."""
        cols, rows = self._size
        if self._master < 0 or rows < 2:
            return
        with contextlib.suppress(OSError):
            self._set_winsize(self._master, cols, rows - 1)
        self._loop.call_later(REDRAW_DIP, self._restore_size)

    def _restore_size(self) -> None:
        if self._master >= 0:
            with contextlib.suppress(OSError):
                self._set_winsize(self._master, *self._size)

    def detach(self, viewer: Viewer) -> None:
        """Stop sending output to the viewer (the process keeps running)."""
        self.viewers.discard(viewer)

    def write(self, data: bytes) -> None:
        """Send input to the process without ever blocking the loop."""
        if self._master < 0 or not data:
            return
        self._touch()
        if self._pending_input:
            self._queue_input(data)
            return
        try:
            written = os.write(self._master, data)
        except BlockingIOError:
            written = 0
        except OSError:
            return  # the terminal is gone; the exit path cleans up
        if written < len(data):
            self._queue_input(data[written:])
            self._loop.add_writer(self._master, self._on_writable)

    def resize(self, cols: int, rows: int) -> None:
        """Set the terminal size; the kernel sends SIGWINCH to the foreground group."""
        self._size = (cols, rows)
        if self._master >= 0:
            with contextlib.suppress(OSError):
                self._set_winsize(self._master, cols, rows)

    def signal_group(self, sig: int) -> None:
        """Send a signal to the process group of the session leader."""
        if self.pid is not None and not self.finished:
            with contextlib.suppress(OSError):
                os.killpg(self.pid, sig)

    def alive_in_session(self) -> bool:
        """True while the process or anything else in its session is running."""
        return not self.finished or bool(self._session_members())

    def kill_all(self) -> None:
        """SIGKILL the process group and every other process of the session."""
        if self.pid is None or (self.finished and self._pid_reused()):
            return
        with contextlib.suppress(OSError):
            os.killpg(self.pid, signal.SIGKILL)
        for pid in self._session_members():
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)

    def hangup(self, kill_after: float = 2.0) -> None:
        """SIGHUP the process group, then SIGKILL the session if still alive later."""
        if self.finished:
            return
        self.signal_group(signal.SIGHUP)
        self._loop.call_later(kill_after, self._kill_if_alive)

    async def wait(self) -> tuple[int | None, str | None]:
        """Wait until the process has exited; returns (exitCode, signal name)."""
        return await asyncio.shield(self._done)

    @staticmethod
    def _set_winsize(fd: int, cols: int, rows: int) -> None:
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def _touch(self) -> None:
        if self._on_activity is not None:
            self._on_activity()

    def _queue_input(self, data: bytes) -> None:
        room = INPUT_QUEUE_LIMIT - len(self._pending_input)
        self._pending_input += data[: max(room, 0)]

    def _on_writable(self) -> None:
        try:
            written = os.write(self._master, self._pending_input)
        except BlockingIOError:
            return
        except OSError:
            written = len(self._pending_input)
        del self._pending_input[:written]
        if not self._pending_input:
            self._loop.remove_writer(self._master)

    def _on_readable(self) -> None:
        try:
            data = os.read(self._master, READ_CHUNK)
        except BlockingIOError:
            return
        except OSError:
            data = b""  # EIO: every slave fd is closed; treat other errors alike
        # A PTY hands out at most a few KiB per read: gather what is already there, so a burst
        # of output costs one frame per viewer and one log write, not dozens. (Never waits:
        # a lone keystroke's echo goes out at once.)
        if len(data) > 1024:
            pieces = [data]
            total = len(data)
            while total < READ_BATCH:
                try:
                    more = os.read(self._master, READ_CHUNK)
                except OSError:  # BlockingIOError: drained for now; EIO is seen on the next call
                    break
                if not more:
                    break
                pieces.append(more)
                total += len(more)
            if len(pieces) > 1:
                data = b"".join(pieces)
        if not data:
            self._close_master()
            if self.returncode is not None:
                self._finish()
            return
        # Viewers first: a keystroke's echo is on its way before the replay and the log
        # take their copies (nothing can attach in between: this runs to its end).
        for viewer in list(self.viewers):
            if not viewer.send_output(data):
                self.viewers.discard(viewer)
        self._touch()
        if self.replay is not None:
            self.replay.append(data)
        if self._logger is not None:
            self._logger.feed(data)
        if self._on_output is not None:
            self._on_output(data)
        if any(v.backlog > HIGH_WATER for v in self.viewers):
            self._pause_reading()

    def _pause_reading(self) -> None:
        if self._master < 0 or self._resume is not None:
            return
        self._loop.remove_reader(self._master)
        self._resume = self._loop.create_task(self._resume_when_drained())

    async def _resume_when_drained(self) -> None:
        stuck = [v for v in self.viewers if v.backlog > LOW_WATER]
        try:
            async with asyncio.timeout(STALL_LIMIT):
                await asyncio.gather(*(v.drained() for v in stuck), return_exceptions=True)
        except TimeoutError:
            for viewer in stuck:  # still stuck after STALL_LIMIT: let it go, resume the rest
                if viewer.backlog > LOW_WATER:
                    viewer.drop()
                    self.viewers.discard(viewer)
        self._resume = None
        if self._master >= 0:
            self._loop.add_reader(self._master, self._on_readable)

    def _on_child_exit(self, returncode: int) -> None:
        self.returncode = returncode
        if self._master < 0:
            self._finish()
        else:
            # Output written just before exit may still be in flight in the
            # kernel; read until EOF, but don't wait for background processes
            # that inherited the terminal.
            self._grace = self._loop.call_later(DRAIN_GRACE, self._finish)

    def _kill_if_alive(self) -> None:
        if self.alive_in_session():
            self.kill_all()

    def _pid_reused(self) -> bool:
        # Linux keeps a PID number allocated while it names a live process group
        # or session, so after our leader was reaped a live process with that
        # PID means the number was reused: it is not ours to kill.
        return os.path.exists(f"/proc/{self.pid}")

    def _session_members(self) -> list[int]:
        if self.pid is None or (self.finished and self._pid_reused()):
            return []
        return session_pids(self.pid)

    def _close_master(self) -> None:
        if self._resume is not None:
            self._resume.cancel()
            self._resume = None
        if self._master >= 0:
            self._loop.remove_reader(self._master)
            self._loop.remove_writer(self._master)
            os.close(self._master)
            self._master = -1
            self._pending_input.clear()

    def _finish(self) -> None:
        if self.finished or self.returncode is None:
            return
        if self._grace is not None:
            self._grace.cancel()
            self._grace = None
        self._close_master()
        if self._logger is not None:
            self._logger.close()
        exit_code, signal_name = describe_exit(self.returncode)
        for viewer in self.viewers:
            viewer.send_exit(exit_code, signal_name)
        self.viewers.clear()
        self._done.set_result((exit_code, signal_name))
