"""Instance records in DNS: made with the instance, removed with it, swept when orphaned, and a
DNS provider that cannot work stops the server at start-up. Against the fake Cloudflare API."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx
import pytest
from pydantic import SecretStr

from gentity.server import reconciler
from gentity.server.preflight import StartupError, preflight
from gentity.settings import Settings
from tests.dns.conftest import TOKEN, FakeCloudflare, start_fake
from tests.server.test_instances import SHELL, create_shell, instance_dir
from tests.waiting import wait_until_blocking

__all__ = ["start_fake"]  # the fixture, used by name below

DOMAIN = "gentity.example.com"


@pytest.fixture
def cloudflare(start_fake: Callable[..., FakeCloudflare]) -> FakeCloudflare:
    return start_fake("--zone", "example.com")


@pytest.fixture
def settings(settings_factory: Callable[..., Settings], cloudflare: FakeCloudflare) -> Settings:
    return settings_factory(
        base_domain=DOMAIN,
        dns_provider="cloudflare",
        cloudflare_api_url=cloudflare.url,
        cloudflare_api_token=SecretStr(TOKEN),
        cloudflare_zone_id=cloudflare.zone_id,
    )


def names(cloudflare: FakeCloudflare) -> dict[str, str]:
    return {r["name"]: r["content"] for r in cloudflare.records()}


def test_a_record_lives_as_long_as_its_instance(
    bearer: httpx.Client, cloudflare: FakeCloudflare
) -> None:
    created = create_shell(bearer)
    assert names(cloudflare) == {f"{created['subdomain']}.{DOMAIN}": DOMAIN}
    assert bearer.delete(f"/api/instances/{created['id']}").status_code == 200
    assert names(cloudflare) == {}


def test_a_dns_failure_fails_the_create_before_a_machine_is_made(
    bearer: httpx.Client, cloudflare: FakeCloudflare, settings: Settings
) -> None:
    failure = {"success": False, "errors": [{"code": 10000, "message": "boom"}], "messages": []}
    cloudflare.fault(method="POST", path="/zones", status=500, body=failure, times=10)
    response = bearer.post("/api/instances", json=SHELL)
    assert response.status_code == 502, response.text
    assert response.json()["error"].startswith("DNS: ")
    (row,) = bearer.get("/api/instances").json()["instances"]
    assert row["status"] == "error"
    assert not instance_dir(settings, row["id"]).exists()
    assert names(cloudflare) == {}
    assert bearer.delete(f"/api/instances/{row['id']}").status_code == 200


def test_the_sweep_removes_records_of_instances_that_do_not_exist(
    bearer: httpx.Client, cloudflare: FakeCloudflare, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reconciler, "SWEEP_INTERVAL_SECONDS", 0.5)
    kept = create_shell(bearer)
    cloudflare.add(
        type="CNAME",
        name=f"cl-gone00.{DOMAIN}",
        content=DOMAIN,
        ttl=1,
        comment="gentity instance 01JGONE0000000000000000000",
    )
    unrelated = cloudflare.add(type="CNAME", name=f"www.{DOMAIN}", content=DOMAIN, ttl=1)
    wait_until_blocking(
        lambda: f"cl-gone00.{DOMAIN}" not in names(cloudflare), "the orphan is swept", 20
    )
    assert set(names(cloudflare)) == {f"{kept['subdomain']}.{DOMAIN}", unrelated["name"]}


def test_a_dns_provider_that_cannot_work_stops_the_server_with_one_line(
    settings_factory: Callable[..., Settings], cloudflare: FakeCloudflare
) -> None:
    base = {
        "dns_provider": "cloudflare",
        "cloudflare_api_url": cloudflare.url,
        "cloudflare_zone_id": cloudflare.zone_id,
    }
    no_domain = settings_factory(**base, base_domain=None, cloudflare_api_token=SecretStr(TOKEN))
    with pytest.raises(StartupError, match="GENTITY_BASE_DOMAIN"):
        asyncio.run(preflight(no_domain))
    no_token = settings_factory(**base, base_domain=DOMAIN, cloudflare_api_token=None)
    with pytest.raises(StartupError, match="GENTITY_CLOUDFLARE_API_TOKEN"):
        asyncio.run(preflight(no_token))
    invalid = {"success": False, "errors": [{"code": 1000, "message": "Invalid API Token"}]}
    cloudflare.fault(path="/user/tokens/verify", status=401, body=invalid, times=5)
    rejected = settings_factory(**base, base_domain=DOMAIN, cloudflare_api_token=SecretStr(TOKEN))
    with pytest.raises(StartupError) as caught:
        asyncio.run(preflight(rejected))
    assert "\n" not in str(caught.value) and TOKEN not in str(caught.value)
    assert "cloudflare DNS provider cannot be used" in str(caught.value)
