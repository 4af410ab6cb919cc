"""The ``ports`` and ``connect`` ops: listening ports from /proc, and a raw pipe to one."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest

from gentity.guest import client
from gentity.guest.client import GuestError
from gentity.guest.ports import parse_listening

from .conftest import GuestFactory

pytestmark = pytest.mark.anyio

QUIET = ["sh", "-c", "echo started; exec sleep 600"]

# Two sockets listening (0.0.0.0:3000 and 127.0.0.1:8080), one established, one in TIME_WAIT.
TABLE = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:0BB8 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 1
   1: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 2
   2: 0100007F:1F91 0100007F:C350 01 00000000:00000000 00:00000000 00000000  1000        0 3
   3: 0100007F:1F92 0100007F:C351 06 00000000:00000000 00:00000000 00000000  1000        0 4
"""
TABLE6 = """\
  sl  local_address                         remote_address                        st
   0: 00000000000000000000000000000000:1538 00000000000000000000000000000000:0000 0A
"""


def test_listening_ports_come_from_the_listen_state_only() -> None:
    assert parse_listening(TABLE) == {3000, 8080}
    assert parse_listening(TABLE6) == {5432}
    assert parse_listening("header only\n garbage line\n") == set()


@pytest.fixture
async def echo_server() -> AsyncIterator[int]:
    """A TCP server on the loopback that answers each connection with what it read, upper
    case, once the client has finished sending (so a half-close must reach it)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.read()
        writer.write(data.upper())
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()


async def test_ports_lists_a_listener_and_connect_pipes_to_it(
    guest_factory: GuestFactory, echo_server: int
) -> None:
    guest = guest_factory(command=QUIET)
    assert echo_server in await client.ports(guest.address, guest.secret)
    before = (await guest.health())["lastActivity"]
    reader, writer = await client.open_port(guest.address, guest.secret, echo_server)
    payload = b"hello through the guest " * 10_000  # several chunks each way
    writer.write(payload)
    await writer.drain()
    writer.write_eof()
    async with asyncio.timeout(10):
        answer = await reader.read()
    writer.close()
    assert answer == payload.upper()
    # Preview traffic is activity (what auto-stop counts), like typing in a terminal.
    after = (await guest.health())["lastActivity"]
    assert after is not None and (before is None or after > before)


async def test_connect_refuses_bad_ports_and_silent_ones(guest_factory: GuestFactory) -> None:
    guest = guest_factory(command=QUIET)
    with socket.socket() as probe:  # a port that nothing listens on
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
    with pytest.raises(GuestError, match=f"nothing accepts connections on port {free}"):
        await client.open_port(guest.address, guest.secret, free)
    for bad in (0, 65536, -1):
        with pytest.raises(GuestError, match="port must be 1-65535"):
            await client.open_port(guest.address, guest.secret, bad)
    with pytest.raises(GuestError, match="unauthorized"):
        await client.ports(guest.address, guest.secret + "x")


async def test_the_guests_own_tcp_port_is_neither_listed_nor_reachable(
    guest_factory: GuestFactory,
) -> None:
    guest = guest_factory(command=QUIET, listen="tcp:127.0.0.1:0")
    own = int(guest.address.rpartition(":")[2])
    assert own not in await client.ports(guest.address, guest.secret)
    with pytest.raises(GuestError, match="the guest's own"):
        await client.open_port(guest.address, guest.secret, own)
