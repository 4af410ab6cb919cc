"""Ports inside the instance: which ones listen, and a pipe to one of them.

Preview URLs reach what the agent serves through the guest, which lives in the instance's
network (its namespace on ``local``, the machine on a cloud), so they work on every provider.
Standard library only.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable
from typing import Final

#: Where the kernel lists this network namespace's TCP sockets.
PROC_TCP: Final = ("/proc/net/tcp", "/proc/net/tcp6")
_LISTEN: Final = "0A"
#: How long opening a connection to a port may take.
CONNECT_TIMEOUT: Final = 5.0
_CHUNK: Final = 64 * 1024
# The instance's own loopback, IPv4 first; a server bound to ::1 only is reached too.
_LOOPBACK: Final = ("127.0.0.1", "::1")


def valid_port(value: object) -> int | None:
    """A TCP port number (1-65535), or None."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        return None
    return value


def parse_listening(text: str) -> set[int]:
    """The local ports of the LISTEN sockets in one ``/proc/net/tcp``-style table."""
    found: set[int] = set()
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 4 or fields[3] != _LISTEN:
            continue
        _, _, port = fields[1].rpartition(":")
        with contextlib.suppress(ValueError):
            number = int(port, 16)
            if 1 <= number <= 65535:
                found.add(number)
    return found


def listening_ports(exclude: Iterable[int] = (), tables: Iterable[str] = PROC_TCP) -> list[int]:
    """Every TCP port something listens on in this network, sorted, without ``exclude``."""
    found: set[int] = set()
    for path in tables:
        # A missing table (no IPv6) lists nothing; a huge one is cut, not read whole.
        with contextlib.suppress(OSError), open(path, encoding="ascii", errors="replace") as f:
            found |= parse_listening(f.read(4 * 1024 * 1024))
    return sorted(found - set(exclude))


async def open_port(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection to ``port`` on the instance's loopback. Raises OSError with a message
    for the client when nothing answers there."""
    for host in _LOOPBACK:
        with contextlib.suppress(OSError, TimeoutError):
            async with asyncio.timeout(CONNECT_TIMEOUT):
                return await asyncio.open_connection(host, port, limit=_CHUNK)
    raise OSError(f"nothing accepts connections on port {port}")


async def pipe(
    a: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    b: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    on_traffic: Callable[[], None],
) -> None:
    """Copy bytes both ways until both sides have finished sending (or one fails).

    An end of stream from one side is passed on as a half-close, so a request/response
    exchange ends cleanly; ``on_traffic`` is called for every chunk (activity for auto-stop).
    """

    async def copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while chunk := await reader.read(_CHUNK):
            on_traffic()
            writer.write(chunk)
            await writer.drain()  # a slow reader slows its writer, nothing piles up here
        if writer.can_write_eof() and not writer.is_closing():
            writer.write_eof()

    tasks = [asyncio.ensure_future(copy(a[0], b[1])), asyncio.ensure_future(copy(b[0], a[1]))]
    try:
        for done in asyncio.as_completed(tasks):
            try:
                await done
            except (OSError, RuntimeError):
                break  # one side broke: the other is of no use any more
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for _, writer in (a, b):
            writer.close()
