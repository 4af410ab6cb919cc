"""The socket ``gentity serve`` listens on before start-up: its connections send at once."""

import asyncio
import socket

from gentity.cli.serve import _listen


def test_connections_have_nagle_off() -> None:
    # With Nagle's algorithm on, a response written in two parts waits for the client's
    # delayed ACK: 40 ms a request on a kept-alive connection.
    async def run() -> int:
        listener = _listen("127.0.0.1", 0)
        listener.setblocking(False)
        nodelay: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        async def accepted(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            sock = writer.get_extra_info("socket")
            nodelay.set_result(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        server = await asyncio.start_server(accepted, sock=listener)
        async with server:
            _, writer = await asyncio.open_connection(*listener.getsockname())
            result = await asyncio.wait_for(nodelay, 10)
            writer.close()
        return result

    assert asyncio.run(run()) == 1
