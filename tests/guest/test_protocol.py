"""Framing, addresses and request lines."""

from __future__ import annotations

import asyncio
import json

import pytest

from gentity.guest import protocol as p


def feed(data: bytes) -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    return reader


def test_frames_round_trip() -> None:
    async def main() -> None:
        data = (
            p.encode_frame(p.FRAME_INPUT, b"ls\n")
            + p.encode_resize(120, 40)
            + p.encode_exit(3, None)
            + p.encode_frame(p.FRAME_OUTPUT, b"")
        )
        reader = feed(data)
        assert await p.read_frame(reader) == (b"i", b"ls\n")
        kind, payload = await p.read_frame(reader) or (b"", b"")
        assert kind == p.FRAME_RESIZE and p.decode_resize(payload) == (120, 40)
        kind, payload = await p.read_frame(reader) or (b"", b"")
        assert kind == p.FRAME_EXIT and p.decode_exit(payload) == p.Exit(3, None)
        assert await p.read_frame(reader) == (b"o", b"")
        assert await p.read_frame(reader) is None

    asyncio.run(main())


def test_frame_header_layout() -> None:
    assert p.encode_frame(b"o", b"abc") == b"o\x00\x00\x00\x03abc"


def test_oversized_and_truncated_frames_are_errors() -> None:
    async def main() -> None:
        big = p.HEADER.pack(b"i", p.MAX_FRAME_BYTES + 1)
        with pytest.raises(p.ProtocolError, match="exceeds"):
            await p.read_frame(feed(big))
        with pytest.raises(p.ProtocolError):
            await p.read_frame(feed(p.encode_frame(b"i", b"hello")[:-2]))
        with pytest.raises(p.ProtocolError):
            await p.read_frame(feed(b"i\x00"))

    asyncio.run(main())
    with pytest.raises(ValueError):
        p.encode_frame(b"o", b"x" * (p.MAX_FRAME_BYTES + 1))
    assert [len(c) for c in p.chunks(b"x" * (p.MAX_FRAME_BYTES + 5))] == [p.MAX_FRAME_BYTES, 5]


def test_resize_payload_validation() -> None:
    assert p.decode_resize(b'{"cols": 5000, "rows": 0}') == (1000, 1)
    assert p.decode_resize(b'{"cols": "80", "rows": 24}') is None
    assert p.decode_resize(b'{"cols": true, "rows": 24}') is None
    assert p.decode_resize(b"not json") is None
    assert p.decode_resize(b"[80, 24]") is None


def test_exit_payload() -> None:
    assert p.decode_exit(b'{"exitCode": null, "signal": "SIGKILL"}') == p.Exit(None, "SIGKILL")
    with pytest.raises(p.ProtocolError):
        p.decode_exit(b'{"exitCode": "3"}')


def test_parse_address() -> None:
    assert p.parse_address("unix:/run/g.sock") == p.Address("unix", path="/run/g.sock")
    assert p.parse_address("tcp:127.0.0.1:0") == p.Address("tcp", host="127.0.0.1", port=0)
    tcp6 = p.parse_address("tcp:[::1]:8022")
    assert tcp6 == p.Address("tcp", host="::1", port=8022)
    assert str(tcp6) == "tcp:[::1]:8022"
    for bad in ("/run/g.sock", "unix:", "tcp:host", "tcp::80", "tcp:h:99999", "http://x"):
        with pytest.raises(ValueError):
            p.parse_address(bad)


def test_request_line() -> None:
    line = p.encode_request("s", "attach", {"cols": 80, "rows": 24, "other": None})
    assert line.endswith(b"\n")
    assert json.loads(line) == {"secret": "s", "op": "attach", "cols": 80, "rows": 24}


def test_parse_tls_address() -> None:
    fly = p.parse_address("tls:127.0.0.1:4433#app.fly.dev")
    assert fly == p.Address("tls", host="127.0.0.1", port=4433, server_name="app.fly.dev")
    assert str(fly) == "tls:127.0.0.1:4433#app.fly.dev"
    assert p.parse_address("tls:app.fly.dev:443").server_name == ""
    with pytest.raises(ValueError, match="tls:host:port"):
        p.parse_address("tls:app.fly.dev#x")
