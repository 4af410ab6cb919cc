"""The logs API: what machines print, paged with next_token, and followed as ``fly logs`` does."""

from __future__ import annotations

import asyncio

import pytest

from gentity.providers.compute.fly.api import FlyApi
from tests.fly.conftest import FakeFly, wait_started

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("sandboxes")]

CHATTY = (
    "import sys, time\n"
    "for i in range(1, 151):\n"
    "    print(f'line {i}', file=sys.stderr if i % 2 else sys.stdout, flush=True)\n"
    "time.sleep(0.5)\n"
    "for i in range(151, 156):\n"
    "    print(f'line {i}', flush=True); time.sleep(0.2)\n"
    "time.sleep(300)\n"
)


async def test_machine_output_pages_and_follows(fake: FakeFly, api: FlyApi) -> None:
    await api.create_app("gentity-cl-logs", "personal")
    config = {"image": "x", "init": {"cmd": ["python3", "-c", CHATTY]}}
    machine = await api.create_machine("gentity-cl-logs", config, region="ord")
    await wait_started(api, "gentity-cl-logs", machine["id"])
    following = api.follow_logs("gentity-cl-logs", next_token="0")
    seen = [(await asyncio.wait_for(anext(following), 10))["message"] for _ in range(155)]
    await following.aclose()
    assert seen == [f"line {i}" for i in range(1, 156)]

    # From the beginning: pages of 100, then the rest, then nothing new (the token stays).
    first = await api.logs("gentity-cl-logs", next_token="0")
    assert [e["message"] for e in first.entries] == [f"line {i}" for i in range(1, 101)]
    assert {(e["instance"], e["region"], e["level"]) for e in first.entries} == {
        (machine["id"], "ord", "info")
    }
    second = await api.logs("gentity-cl-logs", next_token=first.next_token)
    assert [e["message"] for e in second.entries] == [f"line {i}" for i in range(101, 156)]
    empty = await api.logs("gentity-cl-logs", next_token=second.next_token)
    assert empty.entries == [] and empty.next_token == second.next_token
    # Without a token: the latest lines. Filters narrow them.
    latest = await api.logs("gentity-cl-logs")
    assert latest.entries[-1]["message"] == "line 155" and len(latest.entries) == 100
    assert (await api.logs("gentity-cl-logs", instance="0123456789abcd")).entries == []
    assert (await api.logs("gentity-cl-logs", region="iad")).entries == []
