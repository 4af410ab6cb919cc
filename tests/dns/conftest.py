"""The fake Cloudflare API as a real process, and a provider pointed at it."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from gentity.providers.dns.cloudflare.client import CloudflareClient
from gentity.providers.dns.cloudflare.provider import CloudflareDns
from gentity.providers.dns.ratelimit import TokenBucket

TOKEN = "Xk3v9QeLr7TtY2pWm5sZa8NcB4uHd6Jf1GqR0oPi"
"""Shaped like a real Cloudflare API token (40 characters of [A-Za-z0-9_-])."""


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class FakeCloudflare:
    """A running ``python -m gentity.testing.fakecloudflare``."""

    url: str
    """The API base, ending in ``/client/v4``."""
    api: httpx.Client
    """Authenticated, for setting up and inspecting records directly."""
    control: httpx.Client
    """For ``/__fake__``: faults and the request log."""
    zone_id: str

    def fault(self, **fault: Any) -> None:
        self.control.post("/__fake__/faults", json=fault).raise_for_status()

    def requests(self, method: str | None = None) -> list[dict[str, Any]]:
        log: list[dict[str, Any]] = self.control.get("/__fake__/requests").json()
        return [r for r in log if method is None or r["method"] == method]

    def records(self, **params: Any) -> list[dict[str, Any]]:
        body = self.api.get(
            f"/zones/{self.zone_id}/dns_records", params={"per_page": 1000, **params}
        ).json()
        assert body["success"], body
        result: list[dict[str, Any]] = body["result"]
        return result

    def add(self, **record: Any) -> dict[str, Any]:
        body = self.api.post(f"/zones/{self.zone_id}/dns_records", json=record).json()
        assert body["success"], body
        result: dict[str, Any] = body["result"]
        return result


@pytest.fixture
def start_fake() -> Iterator[Callable[..., FakeCloudflare]]:
    processes: list[subprocess.Popen[str]] = []
    clients: list[httpx.Client] = []

    def start(*args: str) -> FakeCloudflare:
        process = subprocess.Popen(
            [sys.executable, "-m", "gentity.testing.fakecloudflare", "--port", "0", *args],
            stdout=subprocess.PIPE,
            text=True,
        )
        processes.append(process)
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("fake Cloudflare API on "), line
        url = line.split()[-1]
        api = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
        control = httpx.Client(base_url=url.removesuffix("/client/v4"), timeout=10)
        clients.extend((api, control))
        zone_id = api.get("/zones").json()["result"][0]["id"]  # the first --zone
        return FakeCloudflare(url, api, control, zone_id)

    yield start
    for client in clients:
        client.close()
    for process in processes:
        process.terminate()
        process.wait(timeout=10)
        assert process.stdout is not None
        process.stdout.close()


@pytest.fixture
def fake(start_fake: Callable[..., FakeCloudflare]) -> FakeCloudflare:
    return start_fake()


@asynccontextmanager
async def provider_for(
    fake: FakeCloudflare, *, token: str = TOKEN, zone_id: str | None = None, **client: Any
) -> AsyncIterator[CloudflareDns]:
    """A provider for ``fake`` that retries fast and is not slowed by the rate limit."""
    options: dict[str, Any] = {
        "timeout": 2.0,
        "retries": 2,
        "backoff": 0.01,
        "bucket": TokenBucket(1000, 1000),
        **client,
    }
    provider = CloudflareDns(CloudflareClient(fake.url, token, **options), zone_id or fake.zone_id)
    try:
        yield provider
    finally:
        await provider.close()
