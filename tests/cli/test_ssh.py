"""``gentity compute ssh`` in a real pseudo-terminal: raw mode, resize, exit code, restore."""

from __future__ import annotations

import fcntl
import os
import re
import select
import signal
import struct
import subprocess
import termios
import threading
import time
from pathlib import Path

from tests.cli.conftest import Cli
from tests.waiting import wait_until_blocking


class PtyReader:
    """Drains the master side in a thread (so the CLI never blocks on a full PTY) and lets
    the test wait for a pattern in everything seen so far."""

    def __init__(self, master: int) -> None:
        self.master = master
        self.data = bytearray()
        self.changed = threading.Condition()
        self.done = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.done:
            ready, _, _ = select.select([self.master], [], [], 0.1)
            if not ready:
                continue
            try:
                chunk = os.read(self.master, 65536)
            except OSError:
                return
            with self.changed:
                self.data += chunk
                self.changed.notify_all()

    def wait_for(self, pattern: bytes, timeout: float = 20, start: int = 0) -> int:
        """Wait until ``pattern`` (a regex) shows up after offset ``start``; where it ends."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                found = re.search(pattern, bytes(self.data[start:]))
                if found:
                    return start + found.end()
                left = deadline - time.monotonic()
                assert left > 0, f"{pattern!r} not seen in {bytes(self.data[start:])!r}"
                self.changed.wait(left)

    def stop(self) -> None:
        self.done = True
        self.thread.join(timeout=5)


def _set_size(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def _wait_until_raw(slave: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while termios.tcgetattr(slave)[3] & termios.ICANON:
        assert time.monotonic() < deadline, "the CLI never put the terminal in raw mode"
        time.sleep(0.05)


def _running(cmdline: bytes) -> bool:
    """Whether a process with this command line (NUL-separated, as in /proc) exists."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if Path(f"/proc/{pid}/cmdline").read_bytes() == cmdline:
                return True
        except OSError:  # it exited while we looked
            continue
    return False


def _spawn(cli: Cli, slave: int, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        cli.argv("compute", "ssh", *args),
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env={**cli.env, "TERM": "xterm"},
        start_new_session=True,
    )


def test_ssh_in_a_terminal(logged_in: Cli, shell_instance: str) -> None:
    master, slave = os.openpty()
    _set_size(slave, 24, 80)
    before = termios.tcgetattr(slave)
    reader = PtyReader(master)
    try:
        # A first session, left with Ctrl-]: the remote shell keeps running, exit code 0.
        proc = _spawn(logged_in, slave, shell_instance)
        _wait_until_raw(slave)
        os.write(master, b"echo fir''st\r")
        reader.wait_for(rb"first\r\n")
        os.write(master, b"\x1d")
        assert proc.wait(timeout=30) == 0
        assert termios.tcgetattr(slave) == before

        # Killed politely: the terminal is restored all the same.
        proc = _spawn(logged_in, slave, shell_instance)
        _wait_until_raw(slave)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 128 + signal.SIGTERM
        assert termios.tcgetattr(slave) == before

        mark = len(reader.data)
        proc = _spawn(logged_in, slave, shell_instance)
        _wait_until_raw(slave)
        # Ctrl-C is a key in raw mode: it reaches the remote shell and kills `sleep` there.
        os.write(master, b"sleep 731\r")  # an unusual duration: no other process matches it
        wait_until_blocking(lambda: _running(b"sleep\x00731\x00"), "the remote sleep runs", 30)
        os.write(master, b"\x03")
        wait_until_blocking(lambda: not _running(b"sleep\x00731\x00"), "Ctrl-C ended the sleep")
        os.write(master, b"echo after''-interrupt\r")
        mark = reader.wait_for(rb"after-interrupt\r\n", start=mark)
        assert proc.poll() is None

        # The window grows: the size reaches the remote terminal on SIGWINCH.
        _set_size(master, 40, 100)
        proc.send_signal(signal.SIGWINCH)
        for _ in range(5):  # the signal and the keystrokes travel separately: allow a retry
            os.write(master, b"stty size\r")
            try:
                mark = reader.wait_for(rb"40 100\r\n", timeout=3, start=mark)
                break
            except AssertionError:
                continue
        else:
            raise AssertionError(f"size never reached the remote side: {bytes(reader.data)!r}")

        os.write(master, b"exit 3\r")
        assert proc.wait(timeout=30) == 3
        assert termios.tcgetattr(slave) == before  # raw mode undone
        assert b"Traceback" not in reader.data
    finally:
        reader.stop()
        os.close(master)
        os.close(slave)
