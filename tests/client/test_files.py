"""The SDK's file calls, sync and async, against a real server and a real instance."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from gentity import models
from gentity.client import ApiError, AsyncClient, Client
from tests.conftest import LiveServer

DATA = bytes(range(256)) * 1000


@pytest.fixture
def sdk(server: LiveServer, token: str) -> Iterator[Client]:
    with Client(server.url, token) as client:
        yield client


@pytest.fixture
def instance(sdk: Client) -> Iterator[str]:
    created = sdk.instances.create("shell", "none", "bash")
    yield created.id
    with contextlib.suppress(ApiError):
        sdk.instances.delete(created.id)


def test_sync_round_trips_from_and_to_local_files(
    sdk: Client, instance: str, tmp_path: Path
) -> None:
    source = tmp_path / "source.bin"
    source.write_bytes(DATA)
    written = sdk.upload(instance, "in/a.bin", source)
    assert written == models.FileWritten(path="/home/agent/work/in/a.bin", size=len(DATA))
    assert sdk.instances.upload(instance, "in/b.bin", b"bytes").size == 5
    assert sdk.upload(instance, "in/c.bin", io.BytesIO(b"stream")).size == 6
    with pytest.raises(TypeError):
        sdk.upload(instance, "in/d.bin", "not a path")  # type: ignore[arg-type]

    assert sdk.download(instance, "in/a.bin") == DATA
    target = tmp_path / "out" / "copy.bin"
    target.parent.mkdir()
    assert sdk.download_to(instance, "/home/agent/work/in/a.bin", target) == len(DATA)
    assert target.read_bytes() == DATA
    listing = sdk.list_files(instance, "in")
    assert [(e.name, e.type, e.size) for e in listing.entries] == [
        ("a.bin", models.FileType.FILE, len(DATA)),
        ("b.bin", models.FileType.FILE, 5),
        ("c.bin", models.FileType.FILE, 6),
    ]
    assert "in" in {e.name for e in sdk.list_files(instance).entries}

    with pytest.raises(ApiError) as caught:
        sdk.list_files(instance, "in/a.bin")
    assert caught.value.status == 400 and "is a file" in caught.value.message
    with pytest.raises(ApiError) as caught:
        sdk.download(instance, "in")
    assert caught.value.status == 400 and "is a directory" in caught.value.message
    with pytest.raises(ApiError) as caught:
        sdk.download(instance, "/etc/passwd")
    assert caught.value.status == 400 and "outside" in caught.value.message

    sdk.delete_file(instance, "in/b.bin")
    with pytest.raises(ApiError) as caught:
        sdk.download(instance, "in/b.bin")
    assert caught.value.status == 404
    with pytest.raises(ApiError) as caught:
        sdk.delete_file(instance, "in")
    assert caught.value.status == 409
    sdk.instances.delete_file(instance, "in", recursive=True)
    assert "in" not in {e.name for e in sdk.list_files(instance).entries}


def test_async_round_trips(server: LiveServer, token: str, instance: str, tmp_path: Path) -> None:
    source = tmp_path / "source.bin"
    source.write_bytes(DATA)

    async def run() -> None:
        async with AsyncClient(server.url, token) as client:
            assert (await client.upload(instance, "x/a.bin", source)).size == len(DATA)
            await client.instances.upload(instance, "x/b.bin", b"b")
            assert await client.download(instance, "x/a.bin") == DATA
            target = tmp_path / "copy.bin"
            assert await client.download_to(instance, "x/a.bin", target) == len(DATA)
            assert target.read_bytes() == DATA
            names = [e.name for e in (await client.list_files(instance, "x")).entries]
            assert names == ["a.bin", "b.bin"]
            await client.delete_file(instance, "x", recursive=True)
            with pytest.raises(ApiError) as caught:
                await client.list_files(instance, "x")
            assert caught.value.status == 404

    asyncio.run(run())
    assert os.path.exists(source)
