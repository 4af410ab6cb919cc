"""Which server a local instance belongs to: recorded at create, compared before acting."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from gentity.providers.compute.local.ownership import Host
from gentity.providers.compute.local.provider import LocalProvider
from tests.providers.contract import spec


def test_the_owner_id_is_kept_in_the_data_directory(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with ThreadPoolExecutor(8) as pool:
        ids = set(pool.map(lambda _: Host.of(data).id, range(16)))
    assert len(ids) == 1  # servers starting at once agree
    (only,) = ids
    assert len(only) == 32
    assert (data / "host-id").read_text().strip() == only
    assert [p.name for p in data.iterdir()] == ["host-id"]  # no draft left behind
    assert Host.of(data).id == only
    assert Host.of(tmp_path / "other").id != only


def test_a_configured_owner_id_wins(tmp_path: Path) -> None:
    assert Host.of(tmp_path / "data", "web-1").id == "web-1"
    assert not (tmp_path / "data" / "host-id").exists()


def test_only_another_owners_instances_are_unreachable(tmp_path: Path) -> None:
    here = Host("aaaa", "web-1")
    assert here.unreachable("cl-x", {}) is None  # made before owners were recorded
    assert here.unreachable("cl-x", {"host": "aaaa", "hostName": "web-1"}) is None
    why = here.unreachable("cl-x", {"host": "bbbb", "hostName": "web-2"})
    assert why == (
        "instance cl-x runs on web-2 (bbbb); this server is web-1 (aaaa) and cannot reach it: "
        "use the server on its host"
    )
    assert "another host" in (here.unreachable("cl-x", {"host": "bbbb"}) or "")


def test_create_records_the_owner(tmp_path: Path) -> None:
    mine = LocalProvider(tmp_path / "data")
    handle = asyncio.run(mine.create(spec()))
    try:
        assert handle.data["host"] == mine.host.id
        assert LocalProvider(tmp_path / "data").unreachable(handle) is None
        # A data directory moved to another host keeps its owner id, and its instances.
        assert LocalProvider(tmp_path / "copy", host_id=mine.host.id).unreachable(handle) is None
        assert LocalProvider(tmp_path / "copy").unreachable(handle) is not None
    finally:
        asyncio.run(mine.destroy(handle))
