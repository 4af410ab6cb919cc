"""``gentity compute ssh``: an instance's terminal, in this terminal.

With a terminal on stdin it runs in raw mode: every key, Ctrl-C included, goes to the remote
side; the window size is sent at the start and on every SIGWINCH; the local settings are put
back however the session ends (exit, Ctrl-], SIGTERM, a crash). Ctrl-] disconnects and leaves
the session running.

With piped stdin the input is typed into the terminal as it arrives. The protocol has no
"end of input" message, and sending Ctrl-D would end the agent's shared session for every
viewer, so at end of input nothing more is sent: output is printed until the remote side
exits, or until it has been quiet for ``eof_timeout`` seconds; then the CLI disconnects and
exits 0 (the session keeps running). ``echo 'ls; exit 3' | gentity compute ssh ID`` exits 3.

The exit code is the remote one (128 + N when a signal ended it), 255 when the connection
closed without an exit status, 130 after Ctrl-C on piped input.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import os
import signal
import sys
import termios
import threading
import tty
from collections.abc import Iterator
from typing import Any

import typer
from websockets.exceptions import ConnectionClosed

from gentity.client import ApiError, AsyncClient, AsyncTerminal, TerminalOutput

DETACH_KEY = b"\x1d"  # Ctrl-], as in telnet
CLOSED_WITHOUT_STATUS = 255


class _Resize:
    """Queue marker: the window changed size."""


_RESIZE = _Resize()
_Item = bytes | _Resize | None  # None: end of input


def run(instance_id: str, *, shell: bool, eof_timeout: float) -> int:
    """Run the session; the exit code to leave with."""
    try:
        return asyncio.run(_session(instance_id, shell, eof_timeout))
    except KeyboardInterrupt:  # Ctrl-C with piped input (raw mode sends it as a key instead)
        return 130


async def _session(instance_id: str, shell: bool, eof_timeout: float) -> int:
    fd = sys.stdin.fileno()
    interactive = os.isatty(fd)
    cols, rows = _size(fd) if interactive else (None, None)
    try:
        async with (
            AsyncClient() as client,
            client.attach(instance_id, shell=shell, cols=cols, rows=rows) as terminal,
        ):
            pump = _Pump(terminal, fd, interactive, eof_timeout)
            # Raw mode only once connected, so a refusal prints as a normal error line; and
            # only while SIGTERM and SIGHUP end the session: arriving a moment before or after
            # it, either would otherwise kill the process with the terminal left raw.
            raw = _raw_mode(fd) if interactive else contextlib.nullcontext()
            with pump.stopped_by_signals(), raw:
                code, message = await pump.run()
    except ApiError as exc:
        if exc.status != 409 or shell or "agent" not in exc.message:
            raise
        message = exc.message.split("; its log says why")[0]
        typer.echo(f"Error: {message}.", err=True)
        typer.echo(
            f"See why with: gentity compute logs {instance_id}\n"
            f"Open a shell instead with: gentity compute ssh --shell {instance_id}",
            err=True,
        )
        return 1
    if message:
        typer.echo(message, err=True)
    return code


@contextlib.contextmanager
def _raw_mode(fd: int) -> Iterator[None]:
    saved = termios.tcgetattr(fd)
    try:
        tty.setraw(fd, termios.TCSANOW)  # TCSANOW: keep what was typed ahead
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def _size(fd: int) -> tuple[int, int]:
    size = os.get_terminal_size(fd)
    return size.columns, size.lines


class _Pump:
    """Copies stdin to the terminal and the terminal to stdout until one side ends."""

    def __init__(
        self, terminal: AsyncTerminal, fd: int, interactive: bool, eof_timeout: float
    ) -> None:
        self.terminal = terminal
        self.fd = fd
        self.interactive = interactive
        self.eof_timeout = eof_timeout
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[_Item] = asyncio.Queue()
        self.stopped: asyncio.Future[int] = self.loop.create_future()
        self.last_output = self.loop.time()

    async def run(self) -> tuple[int, str | None]:
        self._install()
        receiver = asyncio.create_task(self._receive())
        sender = asyncio.create_task(self._send())
        try:
            if self.interactive:
                await self.terminal.resize(*_size(self.fd))
            return await self._wait(receiver, sender)
        finally:
            self._uninstall()
            for task in (receiver, sender):
                task.cancel()
            await asyncio.gather(receiver, sender, return_exceptions=True)

    async def _wait(
        self, receiver: asyncio.Task[None], sender: asyncio.Task[str]
    ) -> tuple[int, str | None]:
        first: set[asyncio.Future[Any]] = {receiver, sender, self.stopped}
        await asyncio.wait(first, return_when=asyncio.FIRST_COMPLETED)
        if self.stopped.done():
            return self.stopped.result(), None
        if not receiver.done():
            why = sender.result()
            if why == "detach":
                return 0, "Disconnected; the session keeps running."
            if why == "eof":
                # Input is over: give the remote side time to finish, as long as it talks.
                while not receiver.done() and not self.stopped.done():
                    remaining = self.last_output + self.eof_timeout - self.loop.time()
                    if remaining <= 0:
                        return 0, (
                            f"Input ended and the terminal was quiet for {self.eof_timeout:g}s; "
                            "disconnected."
                        )
                    rest: set[asyncio.Future[Any]] = {receiver, self.stopped}
                    await asyncio.wait(rest, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
                if self.stopped.done():
                    return self.stopped.result(), None
            await receiver  # "closed": the receiver sees the close too
        receiver.result()
        exit_ = self.terminal.exit
        if exit_ is None:
            return CLOSED_WITHOUT_STATUS, "Error: the terminal closed without an exit status"
        return exit_.status, None

    async def _receive(self) -> None:
        out = sys.stdout.buffer
        async for event in self.terminal:
            if isinstance(event, TerminalOutput):
                out.write(event.data.encode())
                out.flush()
                self.last_output = self.loop.time()

    async def _send(self) -> str:
        """Forward input; returns why it stopped: "eof", "detach" or "closed"."""
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        try:
            while True:
                item = await self.queue.get()
                if item is None:
                    self.last_output = self.loop.time()  # the quiet period starts now
                    return "eof"
                if isinstance(item, _Resize):
                    await self.terminal.resize(*_size(self.fd))
                    continue
                detach = self.interactive and DETACH_KEY in item
                if detach:
                    item = item[: item.index(DETACH_KEY)]
                text = decoder.decode(item)
                if text:
                    await self.terminal.send(text)
                if detach:
                    return "detach"
        except ConnectionClosed:
            return "closed"

    # --- where input and signals come from -----------------------------------------------

    def _install(self) -> None:
        if self.interactive:
            self.loop.add_reader(self.fd, self._on_readable)
            self.loop.add_signal_handler(signal.SIGWINCH, self.queue.put_nowait, _RESIZE)
        else:
            # Pipes and files: a regular file cannot be watched with epoll, so read in a
            # thread. It is a daemon: a read blocked at exit must not keep the process alive.
            threading.Thread(target=self._read_blocking, daemon=True).start()

    def _uninstall(self) -> None:
        if self.interactive:
            self.loop.remove_reader(self.fd)
            self.loop.remove_signal_handler(signal.SIGWINCH)

    @contextlib.contextmanager
    def stopped_by_signals(self) -> Iterator[None]:
        """SIGTERM and SIGHUP end the session (exit code 128 + the signal) while inside."""
        for sig in (signal.SIGTERM, signal.SIGHUP):
            self.loop.add_signal_handler(sig, self._on_signal, sig)
        try:
            yield
        finally:
            for sig in (signal.SIGTERM, signal.SIGHUP):
                self.loop.remove_signal_handler(sig)

    def _on_readable(self) -> None:
        try:
            chunk = os.read(self.fd, 65536)
        except OSError:  # EIO: the terminal hung up
            chunk = b""
        if not chunk:
            self.loop.remove_reader(self.fd)
        self.queue.put_nowait(chunk or None)

    def _read_blocking(self) -> None:
        while True:
            try:
                chunk = os.read(self.fd, 65536)
            except OSError:
                chunk = b""
            try:
                self.loop.call_soon_threadsafe(self.queue.put_nowait, chunk or None)
            except RuntimeError:  # the session is over and its loop closed
                return
            if not chunk:
                return

    def _on_signal(self, sig: signal.Signals) -> None:
        if not self.stopped.done():
            self.stopped.set_result(128 + sig.value)
