"""A WebSocket client for ``/api/instances/<id>/terminal`` with the timing helpers we need."""

from __future__ import annotations

import asyncio
import json
import time
from types import TracebackType
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed


class TerminalError(Exception):
    pass


class Terminal:
    """``async with await Terminal.open(url) as term:`` — JSON ``input``/``output`` messages."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.exit: dict[str, Any] | None = None

    @classmethod
    async def open(cls, url: str, *, compression: bool = True) -> Terminal:
        # Compression as a browser would negotiate it (permessage-deflate), unless disabled.
        ws = await connect(
            url,
            open_timeout=10,
            max_size=16 * 1024 * 1024,
            compression="deflate" if compression else None,
            ping_interval=None,  # the benchmark blocks its loop at times (raw PTY baselines)
        )
        return cls(ws)

    async def __aenter__(self) -> Terminal:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def compressed(self) -> bool:
        extensions = getattr(self.ws.protocol, "extensions", [])
        return any("deflate" in type(e).__name__.lower() for e in extensions)

    def encode_input(self, data: str) -> str:
        """One input message (Gentity's contract: ``{"type": "input", "data": ...}``)."""
        return json.dumps({"type": "input", "data": data})

    def decode(self, raw: str | bytes) -> str:
        """The output in one message ("" for other messages); raises at the session's end."""
        message = json.loads(raw)
        kind = message.get("type")
        if kind == "output":
            return str(message.get("data", ""))
        if kind == "exit":
            self.exit = message
            raise TerminalError(f"the session exited: {message}")
        return ""

    async def send(self, data: str) -> None:
        await self.ws.send(self.encode_input(data))

    async def next_output(self, timeout: float) -> str:
        """The data of the next ``output`` message ("" for other messages)."""
        try:
            async with asyncio.timeout(timeout):
                raw = await self.ws.recv()
        except ConnectionClosed as exc:
            raise TerminalError(f"the terminal WebSocket closed: {exc}") from None
        return self.decode(raw)

    async def read_until(self, marker: str, timeout: float = 10.0) -> int:
        """Read output until ``marker`` appears; returns the number of UTF-8 bytes received."""
        deadline = time.monotonic() + timeout
        total = 0
        window = ""
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            data = await self.next_output(remaining)
            total += len(data.encode())
            window = window[-len(marker) :] + data
            if marker in window:
                return total

    async def drain(self, quiet: float = 0.05, limit: float = 2.0) -> None:
        """Discard output until nothing has come for ``quiet`` seconds."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            try:
                await self.next_output(quiet)
            except TimeoutError:
                return

    async def sync(self, tag: str = "sync", timeout: float = 10.0) -> None:
        """Run an echo and wait for its output: the shell is ready and the stream is empty."""
        await self.send(f"echo {tag}-$((6*7))\r")
        await self.read_until(f"{tag}-42", timeout)
        await self.drain()

    async def keystroke(self, char: str, timeout: float = 5.0) -> float:
        """Seconds from sending one character to receiving its echo in an ``output`` message."""
        start = time.perf_counter()
        await self.send(char)
        deadline = start + timeout
        while True:
            data = await self.next_output(max(deadline - time.perf_counter(), 0.0))
            if char in data:
                return time.perf_counter() - start

    async def close(self) -> None:
        await self.ws.close()
