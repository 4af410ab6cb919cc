"""The guest's file ops over its socket: the secret, streaming both ways, an upload cut off
or filling the volume, and file traffic counted as activity."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from gentity.guest import client
from gentity.guest import protocol as p
from gentity.guest.client import FileDownload, GuestError, GuestRefused
from gentity.guest.protocol import parse_address

from .conftest import GuestFactory

pytestmark = pytest.mark.anyio

QUIET = ["sh", "-c", "exec sleep 600"]


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def read_all(download: FileDownload) -> bytes:
    return b"".join([chunk async for chunk in download.chunks()])


async def test_file_ops_need_the_secret(guest_factory: GuestFactory) -> None:
    guest = guest_factory(command=QUIET)
    wrong = guest.secret + "x"
    for call in (
        client.get_file(guest.address, wrong, "x"),
        client.put_file(guest.address, wrong, "x", chunks(b"x")),
        client.delete_file(guest.address, wrong, "x"),
    ):
        with pytest.raises(GuestError, match="unauthorized"):
            await call
    assert not (Path(guest.config["workdir"]) / "x").exists()


async def test_round_trip_in_frames_and_activity(guest_factory: GuestFactory) -> None:
    guest = guest_factory(command=QUIET)
    before = (await client.health(guest.address, guest.secret))["lastActivity"]
    big = os.urandom(3 * p.MAX_FRAME_BYTES + 5)  # more than one frame each way
    answer = await client.put_file(
        guest.address, guest.secret, "a/b.bin", chunks(big[:10], big[10:])
    )
    workdir = guest.config["workdir"]
    assert answer == {"ok": True, "path": f"{workdir}/a/b.bin", "size": len(big), "created": True}
    download = await client.get_file(guest.address, guest.secret, "a/b.bin")
    assert isinstance(download, FileDownload) and download.size == len(big)
    assert await read_all(download) == big
    listing = await client.get_file(guest.address, guest.secret, "a")
    assert isinstance(listing, dict) and [e["name"] for e in listing["entries"]] == ["b.bin"]
    with pytest.raises(GuestRefused) as refused:
        await client.get_file(guest.address, guest.secret, "/etc/passwd")
    assert refused.value.reason == "invalid" and "outside" in str(refused.value)
    assert await client.delete_file(guest.address, guest.secret, "a", recursive=True) == "directory"
    after = (await client.health(guest.address, guest.secret))["lastActivity"]
    assert after is not None and (before is None or after > before)


async def test_an_upload_cut_off_changes_nothing(guest_factory: GuestFactory) -> None:
    guest = guest_factory(command=QUIET)
    workdir = Path(guest.config["workdir"])
    await client.put_file(guest.address, guest.secret, "keep.txt", chunks(b"old"))
    reader, writer = await asyncio.open_unix_connection(parse_address(guest.address).path)
    writer.write(p.encode_request(guest.secret, p.OP_FILE_PUT, {"path": "keep.txt"}))
    assert b'"ok":true' in await reader.readline()
    writer.write(p.encode_frame(p.FRAME_DATA, b"half of the new"))
    await writer.drain()
    writer.close()  # no end frame
    await writer.wait_closed()

    def settled() -> bool:  # the guest drops its temporary file when it sees the end
        return sorted(os.listdir(workdir)) == ["keep.txt"]

    async with asyncio.timeout(10):
        while not settled():
            await asyncio.sleep(0.02)
    assert (workdir / "keep.txt").read_bytes() == b"old"


@pytest.fixture
def small_volume(tmp_path: Path) -> Iterator[Path]:
    """A 512 KiB tmpfs as the guest's volume (mounting needs root, as the server has)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small volume needs root")
    volume = tmp_path / "volume"
    volume.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(volume)], check=True)
    try:
        yield volume
    finally:
        subprocess.run(["umount", "-l", str(volume)], check=False)


async def test_a_full_volume_is_a_refusal_the_client_hears(
    guest_factory: GuestFactory, small_volume: Path
) -> None:
    guest = guest_factory(command=QUIET, workdir=str(small_volume))
    await client.put_file(guest.address, guest.secret, "keep.txt", chunks(b"old"))
    too_big = [os.urandom(256 * 1024) for _ in range(8)]
    with pytest.raises(GuestRefused) as refused:
        await client.put_file(guest.address, guest.secret, "keep.txt", chunks(*too_big))
    assert refused.value.reason == "conflict" and "volume is full" in str(refused.value)
    assert sorted(os.listdir(small_volume)) == ["keep.txt"]
    assert (small_volume / "keep.txt").read_bytes() == b"old"
    assert (await client.health(guest.address, guest.secret))["configured"] is True


async def test_a_long_listing_comes_in_frames_and_is_capped(guest_factory: GuestFactory) -> None:
    guest = guest_factory(command=QUIET)
    many = Path(guest.config["workdir"]) / "many"
    many.mkdir(parents=True)
    for i in range(10_050):
        (many / f"{i:05d}-{'x' * 200}").touch()
    listing = await client.get_file(guest.address, guest.secret, "many")
    assert isinstance(listing, dict) and listing["truncated"] is True
    names = [entry["name"] for entry in listing["entries"]]
    assert len(names) == 10_000 and names == sorted(names)
    # The answer line stays small whatever the directory holds (64 KiB read buffers).
    reader, writer = await asyncio.open_unix_connection(parse_address(guest.address).path)
    writer.write(p.encode_request(guest.secret, p.OP_FILE_GET, {"path": "many"}))
    line = await reader.readline()
    assert len(line) < 100 and b'"truncated":true' in line
    writer.close()


async def test_a_file_that_shrinks_while_read_is_not_passed_off_as_whole(
    guest_factory: GuestFactory,
) -> None:
    guest = guest_factory(command=QUIET)
    target = Path(guest.config["workdir"]) / "growing.log"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(os.urandom(16 * 1024 * 1024))
    download = await client.get_file(guest.address, guest.secret, "growing.log")
    assert isinstance(download, FileDownload) and download.size == 16 * 1024 * 1024
    received = 0
    with pytest.raises(GuestError, match="changed"):
        async for chunk in download.chunks():
            if received == 0:
                os.truncate(target, 1024)  # the guest is held back by this slow reader
            received += len(chunk)
    assert received < download.size


def test_a_listing_of_huge_entries_is_refused_before_it_fills_memory() -> None:
    """A hostile guest sends few entries of a mebibyte each: the count limit alone would let
    the server hold gigabytes; the byte limit ends the listing instead."""

    async def run() -> None:
        reader = asyncio.StreamReader()
        entry = {"name": "x" * (1000 * 1024), "type": "file", "size": 0, "modifiedAt": None}
        frame = p.encode_frame(p.FRAME_DATA, json.dumps([entry]).encode())
        for _ in range(client.MAX_LISTING_BYTES // len(frame) + 2):
            reader.feed_data(frame)
        reader.feed_data(p.encode_frame(p.FRAME_END, b""))
        with pytest.raises(GuestError, match="invalid listing"):
            await client._entries(reader)

    asyncio.run(run())
