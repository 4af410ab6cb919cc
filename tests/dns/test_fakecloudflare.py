"""The fake Cloudflare API keeps the real contract: envelopes, codes, statuses, validation."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from gentity.testing.fakecloudflare import create_app
from tests.dns.conftest import TOKEN, FakeCloudflare
from tests.json_body import json_object


def records_url(fake: FakeCloudflare) -> str:
    return f"/zones/{fake.zone_id}/dns_records"


def assert_error(response: httpx.Response, status: int, code: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = json_object(response.json())
    assert body["success"] is False and body["result"] is None and body["messages"] == []
    assert body["errors"][0]["code"] == code, body
    return body


def test_zone_lookup_by_name_and_stable_zone_ids(
    start_fake: Callable[..., FakeCloudflare],
) -> None:
    first = start_fake("--zone", "example.com", "--zone", "example.org")
    second = start_fake("--zone", "example.org")
    org = first.api.get("/zones", params={"name": "example.org"}).json()
    assert org["success"] is True and org["errors"] == []
    assert [z["name"] for z in org["result"]] == ["example.org"]
    assert org["result_info"]["total_count"] == 1
    assert len(org["result"][0]["id"]) == 32
    again = second.api.get("/zones", params={"name": "example.org"}).json()["result"][0]["id"]
    assert org["result"][0]["id"] == again
    assert first.api.get("/zones", params={"name": "nope.com"}).json()["result"] == []
    assert first.api.get(f"/zones/{again}").json()["result"]["name"] == "example.org"


def test_credentials(start_fake: Callable[..., FakeCloudflare]) -> None:
    fake = start_fake("--token", TOKEN)
    path = fake.url + records_url(fake)
    missing = assert_error(httpx.get(path), 400, 9106)
    assert "Authorization" in missing["errors"][0]["message"]
    malformed = assert_error(httpx.get(path, headers={"Authorization": "Token x"}), 400, 6003)
    assert malformed["errors"][0]["error_chain"][0]["code"] == 6111
    wrong = {"Authorization": "Bearer not-the-token"}
    assert_error(httpx.get(path, headers=wrong), 403, 10000)
    assert_error(httpx.get(fake.url + "/user/tokens/verify", headers=wrong), 401, 1000)
    verified = fake.api.get("/user/tokens/verify").json()
    assert verified["success"] is True and verified["result"]["status"] == "active"
    assert fake.api.get(records_url(fake)).json()["success"] is True


def test_create_returns_the_fqdn_and_get_patch_delete(fake: FakeCloudflare) -> None:
    created = fake.add(type="CNAME", name="CL-Abc", content="a.fly.dev", comment="mine")
    assert created["name"] == "cl-abc.example.com"
    assert created["ttl"] == 1 and created["proxied"] is False and created["proxiable"] is True
    assert len(created["id"]) == 32 and created["comment"] == "mine"
    url = f"{records_url(fake)}/{created['id']}"
    assert fake.api.get(url).json()["result"] == created
    patched = fake.api.patch(url, json={"content": "b.fly.dev", "ttl": 120}).json()["result"]
    assert (patched["content"], patched["ttl"], patched["name"]) == (
        "b.fly.dev",
        120,
        "cl-abc.example.com",
    )
    replaced = fake.api.put(url, json={"type": "A", "name": "cl-abc", "content": "192.0.2.9"})
    replaced_record = replaced.json()["result"]
    assert (replaced_record["type"], replaced_record["ttl"], replaced_record["comment"]) == (
        "A",
        1,
        None,
    )
    assert replaced_record["created_on"] == created["created_on"]
    assert fake.api.delete(url).json()["result"] == {"id": created["id"]}
    for method in ("GET", "PATCH", "PUT", "DELETE"):
        assert_error(fake.api.request(method, url, json={}), 404, 81044)


def test_duplicates(fake: FakeCloudflare) -> None:
    fake.add(type="CNAME", name="cl-one.example.com", content="a.fly.dev")
    fake.add(type="A", name="two", content="192.0.2.1")
    same = {"type": "CNAME", "name": "cl-one", "content": "A.fly.dev"}
    assert_error(fake.api.post(records_url(fake), json=same), 400, 81057)
    other = {"type": "CNAME", "name": "two", "content": "b.fly.dev"}
    assert_error(fake.api.post(records_url(fake), json=other), 400, 81053)
    beside_cname = {"type": "A", "name": "cl-one", "content": "192.0.2.2"}
    assert_error(fake.api.post(records_url(fake), json=beside_cname), 400, 81054)
    # Two A records for one name are fine.
    fake.add(type="A", name="two", content="192.0.2.2")


@pytest.mark.parametrize(
    ("record", "code"),
    [
        ({"type": "CNAME", "name": "x", "content": "a.fly.dev", "ttl": 30}, 9021),
        ({"type": "CNAME", "name": "x", "content": "a.fly.dev", "ttl": 86401}, 9021),
        ({"type": "TXT", "name": "x", "content": "hello", "proxied": True}, 9004),
        ({"type": "MX", "name": "x", "content": "mail.example.com"}, 9000),
    ],
)
def test_validation(fake: FakeCloudflare, record: dict[str, Any], code: int) -> None:
    body = assert_error(fake.api.post(records_url(fake), json=record), 400, 1004)
    assert body["errors"][0]["error_chain"][0]["code"] == code
    assert fake.records() == []


def test_addresses_must_fit_the_type(fake: FakeCloudflare) -> None:
    a = {"type": "A", "name": "x", "content": "a.fly.dev"}
    assert_error(fake.api.post(records_url(fake), json=a), 400, 9005)
    aaaa = {"type": "AAAA", "name": "x", "content": "192.0.2.1"}
    assert_error(fake.api.post(records_url(fake), json=aaaa), 400, 9006)
    assert fake.records() == []


def test_proxied_records_have_the_automatic_ttl(fake: FakeCloudflare) -> None:
    record = fake.add(type="A", name="p", content="192.0.2.1", proxied=True, ttl=300)
    assert (record["proxied"], record["ttl"]) == (True, 1)
    assert fake.add(type="TXT", name="t", content="x", ttl=60)["proxiable"] is False


def test_list_filters_and_pages(fake: FakeCloudflare) -> None:
    for i in range(12):
        fake.add(type="CNAME", name=f"cl-{i:02d}", content="a.fly.dev", comment=f"gentity {i}")
    fake.add(type="A", name="other", content="192.0.2.1")
    assert [r["name"] for r in fake.records(name="cl-03.example.com")] == ["cl-03.example.com"]
    assert len(fake.records(type="A")) == 1
    assert len(fake.records(**{"comment.startswith": "gentity "})) == 12
    assert [r["comment"] for r in fake.records(**{"comment.exact": "gentity 7"})] == ["gentity 7"]
    assert len(fake.records(**{"comment.absent": ""})) == 1
    page = fake.api.get(records_url(fake), params={"per_page": 5, "page": 3}).json()
    assert page["result_info"] == {
        "page": 3,
        "per_page": 5,
        "count": 3,
        "total_count": 13,
        "total_pages": 3,
    }
    names = [
        r["name"]
        for p in (1, 2, 3)
        for r in fake.api.get(records_url(fake), params={"per_page": 5, "page": p}).json()["result"]
    ]
    assert len(set(names)) == 13


def test_faults_answer_n_times_then_stop(fake: FakeCloudflare) -> None:
    fake.fault(
        method="GET",
        path="/zones/",
        status=429,
        body={"success": False, "errors": [{"code": 971, "message": "slow down"}]},
        headers={"Retry-After": "7"},
        times=2,
    )
    for _ in range(2):
        limited = fake.api.get(records_url(fake))
        assert limited.status_code == 429 and limited.headers["retry-after"] == "7"
    assert fake.api.get(records_url(fake)).status_code == 200
    fake.fault(status=502, text="<html>bad gateway</html>")
    assert fake.api.get("/user/tokens/verify").text == "<html>bad gateway</html>"
    fake.fault(path="/user/", hang=0.5)
    started = time.monotonic()
    assert fake.api.get("/user/tokens/verify").status_code == 200
    assert time.monotonic() - started >= 0.5
    fake.fault(status=500, times=5)
    fake.control.delete("/__fake__/faults")
    assert fake.control.post("/__fake__/faults", json={"stauts": 500}).status_code == 400
    assert fake.api.get("/user/tokens/verify").status_code == 200
    logged = fake.requests("GET")
    assert logged[-1] == {"method": "GET", "path": "/user/tokens/verify", "params": {}}


def test_unknown_routes_and_zones_are_enveloped(fake: FakeCloudflare) -> None:
    assert_error(fake.api.get("/nothing"), 404, 7000)
    assert_error(fake.api.post(f"{records_url(fake)}/abc", json={}), 405, 7001)
    body = assert_error(fake.api.get("/zones/0123/dns_records"), 400, 7003)
    assert body["errors"][1]["code"] == 7000
    assert_error(fake.api.post(records_url(fake), content=b"not json"), 400, 9207)


@pytest.mark.anyio
async def test_importable_as_an_app() -> None:
    transport = httpx.ASGITransport(app=create_app(["example.net"], token=TOKEN))
    async with httpx.AsyncClient(transport=transport, base_url="http://fake") as client:
        zones = await client.get("/client/v4/zones", headers={"Authorization": f"Bearer {TOKEN}"})
    assert [z["name"] for z in zones.json()["result"]] == ["example.net"]
