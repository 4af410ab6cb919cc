"""The baseline for the terminal figures: bash on a raw PTY, read straight from the master.

It mirrors what the guest daemon does for the agent's session (``os.openpty``, a new session
with the slave as controlling terminal, the catalog's ``bash -l``, the guest's environment) but
with nothing between the benchmark and the master: no daemon, no socket, no server, no
WebSocket. Blocking and synchronous on purpose.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import signal
import struct
import subprocess
import termios
import time
from pathlib import Path
from types import TracebackType

SHELL_COMMAND = ["bash", "-l"]  # the catalog's command for the "shell" agent
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class PtyTimeout(Exception):
    pass


def guest_like_env(home: Path) -> dict[str, str]:
    """The environment the guest gives the agent (see ``sandbox.guest_environment``)."""
    return {
        "PATH": DEFAULT_PATH,
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "TERM": "xterm-256color",
        "SHELL": "/bin/bash",
    }


def _controlling_tty() -> None:
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class RawPty:
    """``bash -l`` on a fresh PTY. Use as a context manager; :meth:`close` kills it."""

    def __init__(self, home: Path, cols: int = 200, rows: int = 50) -> None:
        master, slave = os.openpty()
        try:
            fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
            self.proc = subprocess.Popen(
                SHELL_COMMAND,
                stdin=slave,
                stdout=slave,
                stderr=slave,
                cwd=home,
                env=guest_like_env(home),
                start_new_session=True,
                preexec_fn=_controlling_tty,
            )
        except BaseException:
            os.close(master)
            raise
        finally:
            os.close(slave)
        self.master = master

    def __enter__(self) -> RawPty:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self.master, view)
            view = view[written:]

    def read(self, timeout: float) -> bytes:
        """One read from the master (up to 64 KiB, like the guest); b"" on timeout."""
        ready, _, _ = select.select([self.master], [], [], timeout)
        if not ready:
            return b""
        try:
            return os.read(self.master, 65536)
        except OSError:
            return b""

    def read_until(self, marker: bytes, timeout: float = 10.0) -> int:
        """Read until ``marker`` appears; returns the number of bytes read."""
        deadline = time.monotonic() + timeout
        total = 0
        window = b""
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise PtyTimeout(f"no {marker!r} on the raw PTY within {timeout:g} s")
            data = self.read(remaining)
            total += len(data)
            window = window[-len(marker) :] + data
            if marker in window:
                return total

    def drain(self, quiet: float = 0.05, limit: float = 2.0) -> None:
        """Read and discard until the terminal has been quiet for ``quiet`` seconds."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline and self.read(quiet):
            pass

    def keystroke(self, char: bytes, timeout: float = 5.0) -> float:
        """Seconds from writing one character to reading its echo from the master."""
        start = time.perf_counter()
        os.write(self.master, char)
        deadline = start + timeout
        while True:
            data = self.read(max(deadline - time.perf_counter(), 0.0))
            if char in data:
                return time.perf_counter() - start
            if time.perf_counter() >= deadline:
                raise PtyTimeout(f"no echo of {char!r} on the raw PTY")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.killpg(self.proc.pid, signal.SIGHUP)
        try:
            self.proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(OSError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=2)
        with contextlib.suppress(OSError):
            os.close(self.master)
