"""Warm spares: a new instance waits for a spare being started instead of booting beside it."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from gentity.providers.compute.base import ProviderError
from gentity.providers.compute.local import spares
from gentity.providers.compute.local.guest_process import Booted
from gentity.providers.compute.local.sandbox import InstancePaths


class _Waiting:
    """A guest process that still waits for its bootstrap."""

    def poll(self) -> int | None:
        return None


class _Starter:
    """``start_one`` for the pool: each start blocks until released (or fails, if told to)."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.release = threading.Event()
        self.fail = False
        self.started = 0

    def __call__(self) -> Booted:
        self.started += 1
        if not self.release.wait(10):
            raise ProviderError("never released")
        if self.fail:
            raise ProviderError("the spare did not start")
        paths = InstancePaths.under(self.tmp_path, f"spare{self.started}", self.tmp_path / "run")
        process: Any = _Waiting()
        return Booted(paths, process, listen_fd=3, cgroup_fd=None)


@pytest.fixture(autouse=True)
def _bubblewrap(monkeypatch: pytest.MonkeyPatch) -> None:
    # Spares exist only with a sandbox; these tests are about the pool, not the sandbox.
    monkeypatch.setattr(spares, "bwrap_path", lambda: "/usr/bin/bwrap")


async def _until(condition: Any) -> None:
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("timed out")


def test_a_new_instance_takes_the_spare_being_started(tmp_path: Path) -> None:
    starter = _Starter(tmp_path)
    pool = spares.WarmSpares(1, starter, lambda _: None)

    async def scenario() -> None:
        pool.refill_soon()
        await _until(lambda: pool._starting == 1)
        taking = asyncio.create_task(asyncio.to_thread(pool.take, spares.SPARE_VOLUME_GB))
        await _until(lambda: pool._waiting == 1)
        assert not taking.done()
        starter.release.set()
        taken = await taking
        assert taken is not None and taken.paths.root.name == "spare1"
        assert starter.started == 1  # one boot, not a second one beside it
        await pool.close()

    asyncio.run(scenario())


def test_each_spare_being_started_is_waited_for_once(tmp_path: Path) -> None:
    """A second start does not queue behind the first for the same spare: it boots cold."""
    starter = _Starter(tmp_path)
    pool = spares.WarmSpares(1, starter, lambda _: None)

    async def scenario() -> None:
        pool.refill_soon()
        await _until(lambda: pool._starting == 1)
        first = asyncio.create_task(asyncio.to_thread(pool.take, spares.SPARE_VOLUME_GB))
        await _until(lambda: pool._waiting == 1)
        started = time.monotonic()
        assert await asyncio.to_thread(pool.take, spares.SPARE_VOLUME_GB) is None
        assert time.monotonic() - started < 1
        starter.release.set()
        assert await first is not None
        await pool.close()

    asyncio.run(scenario())


def test_a_spare_that_fails_to_start_ends_the_wait(tmp_path: Path) -> None:
    starter = _Starter(tmp_path)
    starter.fail = True
    pool = spares.WarmSpares(1, starter, lambda _: None)

    async def scenario() -> None:
        pool.refill_soon()
        await _until(lambda: pool._starting == 1)
        taking = asyncio.create_task(asyncio.to_thread(pool.take, spares.SPARE_VOLUME_GB, 30))
        await _until(lambda: pool._waiting == 1)
        started = time.monotonic()
        starter.release.set()
        assert await taking is None
        assert time.monotonic() - started < 5
        await pool.close()

    asyncio.run(scenario())


def test_the_wait_for_a_spare_is_bounded(tmp_path: Path) -> None:
    starter = _Starter(tmp_path)
    pool = spares.WarmSpares(1, starter, lambda _: None)

    async def scenario() -> None:
        pool.refill_soon()
        await _until(lambda: pool._starting == 1)
        started = time.monotonic()
        assert await asyncio.to_thread(pool.take, spares.SPARE_VOLUME_GB, 0.2) is None
        assert 0.2 <= time.monotonic() - started < 5
        starter.release.set()
        await pool.close()

    asyncio.run(scenario())


def test_without_a_spare_being_started_nobody_waits(tmp_path: Path) -> None:
    starter = _Starter(tmp_path)
    pool = spares.WarmSpares(1, starter, lambda _: None)
    started = time.monotonic()
    assert pool.take(spares.SPARE_VOLUME_GB) is None
    assert time.monotonic() - started < 1
    assert starter.started == 0
