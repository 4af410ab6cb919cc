"""The cloudflare DNS provider against the fake Cloudflare API, in a real process."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable

import pytest

from gentity.providers.dns.base import DnsError, DnsErrorKind, DnsRecord
from tests.dns.conftest import TOKEN, FakeCloudflare, provider_for

pytestmark = pytest.mark.anyio

NAME = "cl-x7k2m9.example.com"
RATE_LIMITED = {
    "success": False,
    "errors": [{"code": 971, "message": "Please wait and consider throttling your request speed"}],
    "messages": [],
    "result": None,
}


async def test_ensure_creates_one_dns_only_record_and_repeats_quietly(
    fake: FakeCloudflare,
) -> None:
    async with provider_for(fake) as dns:
        await dns.ensure_record("inst-1", NAME, "gentity.example.net")
        await dns.ensure_record("inst-1", NAME.upper() + ".", "gentity.example.net")
    [record] = fake.records()
    assert (record["name"], record["type"], record["content"]) == (
        NAME,
        "CNAME",
        "gentity.example.net",
    )
    assert (record["proxied"], record["ttl"]) == (False, 1)
    assert record["comment"] == "gentity instance inst-1"
    # The second call met the first one's record (81057) and accepted it.
    assert len(fake.requests("POST")) == 2


async def test_an_ip_target_makes_an_address_record(fake: FakeCloudflare) -> None:
    async with provider_for(fake) as dns:
        await dns.ensure_record("inst-4", "cl-v4.example.com", "192.0.2.10")
        await dns.ensure_record("inst-6", "cl-v6.example.com", "2001:db8::10")
    assert sorted((r["type"], r["content"]) for r in fake.records()) == [
        ("A", "192.0.2.10"),
        ("AAAA", "2001:db8::10"),
    ]


async def test_our_record_with_another_target_is_repointed(fake: FakeCloudflare) -> None:
    old = fake.add(type="CNAME", name=NAME, content="old.fly.dev", comment="gentity instance i")
    async with provider_for(fake) as dns:
        await dns.ensure_record("i", NAME, "new.fly.dev")
    [record] = fake.records()
    assert (record["id"], record["content"]) == (old["id"], "new.fly.dev")


@pytest.mark.parametrize("comment", [None, "gentity instance someone-else", "made by hand"])
async def test_a_name_taken_by_another_record_is_a_conflict(
    fake: FakeCloudflare, comment: str | None
) -> None:
    taken = fake.add(type="A", name=NAME, content="192.0.2.1", comment=comment)
    async with provider_for(fake) as dns:
        with pytest.raises(DnsError) as caught:
            await dns.ensure_record("mine", NAME, "gentity.example.net")
    assert caught.value.kind is DnsErrorKind.CONFLICT
    assert NAME in str(caught.value)
    assert fake.records() == [taken]


async def test_delete_is_idempotent(fake: FakeCloudflare) -> None:
    fake.add(
        type="CNAME",
        name="cl-keep.example.com",
        content="a.fly.dev",
        comment="gentity instance keep",
    )
    async with provider_for(fake) as dns:
        await dns.ensure_record("gone", NAME, "a.fly.dev")
        [record] = [r for r in await dns.list_records() if r.instance_id == "gone"]
        await dns.delete_records("gone")
        await dns.delete_records("gone")
        await dns.delete_record(record)  # 81044: already gone is success
    assert [r["name"] for r in fake.records()] == ["cl-keep.example.com"]
    assert len(fake.requests("DELETE")) == 2


async def test_list_pages_through_more_than_a_hundred_records(fake: FakeCloudflare) -> None:
    for i in range(130):
        fake.add(
            type="CNAME", name=f"cl-{i:03d}", content="a.fly.dev", comment=f"gentity instance i{i}"
        )
    for i in range(3):
        fake.add(type="CNAME", name=f"www{i}", content="a.fly.dev", comment="not ours")
    async with provider_for(fake) as dns:
        records = await dns.list_records()
    assert sorted(r.instance_id for r in records) == sorted(f"i{i}" for i in range(130))
    assert all(isinstance(r, DnsRecord) and r.name.endswith(".example.com") for r in records)
    lists = [r["params"] for r in fake.requests("GET") if r["path"].endswith("/dns_records")]
    assert [p["page"] for p in lists[-2:]] == ["1", "2"]
    assert all(int(p["per_page"]) <= 100 for p in lists)


async def test_sweep_removes_only_records_of_unknown_instances(fake: FakeCloudflare) -> None:
    unmanaged = fake.add(type="CNAME", name="www", content="a.fly.dev")
    async with provider_for(fake) as dns:
        for instance in ("alive", "dead-1", "dead-2"):
            await dns.ensure_record(instance, f"cl-{instance}.example.com", "a.fly.dev")
        removed = await dns.sweep({"alive", "never-had-one"})
    assert sorted(r.instance_id for r in removed) == ["dead-1", "dead-2"]
    assert sorted(r["name"] for r in fake.records()) == ["cl-alive.example.com", unmanaged["name"]]


async def test_429_retry_after_is_honoured(fake: FakeCloudflare) -> None:
    fake.fault(method="POST", status=429, body=RATE_LIMITED, headers={"Retry-After": "1"})
    async with provider_for(fake, backoff=0) as dns:
        started = time.monotonic()
        await dns.ensure_record("inst", NAME, "a.fly.dev")
    assert time.monotonic() - started >= 1.0
    assert len(fake.requests("POST")) == 2
    assert len(fake.records()) == 1


async def test_a_retry_after_longer_than_we_wait_fails_at_once(fake: FakeCloudflare) -> None:
    fake.fault(method="POST", status=429, body=RATE_LIMITED, headers={"Retry-After": "120"})
    async with provider_for(fake, max_retry_after=30) as dns:
        started = time.monotonic()
        with pytest.raises(DnsError) as caught:
            await dns.ensure_record("inst", NAME, "a.fly.dev")
    assert time.monotonic() - started < 10  # not the 120 s asked for
    assert caught.value.kind is DnsErrorKind.RATE_LIMITED
    assert "throttling" in str(caught.value) and "120s" in str(caught.value)
    assert len(fake.requests("POST")) == 1


async def test_5xx_is_retried_then_reported_as_upstream(fake: FakeCloudflare) -> None:
    failure = {"success": False, "errors": [{"code": 10001, "message": "service unavailable"}]}
    fake.fault(method="POST", status=503, body=failure, times=3)
    async with provider_for(fake, retries=2) as dns:
        with pytest.raises(DnsError) as caught:
            await dns.ensure_record("inst", NAME, "a.fly.dev")
        assert caught.value.kind is DnsErrorKind.UPSTREAM
        assert "service unavailable" in str(caught.value)
        assert len(fake.requests("POST")) == 3
        # One failure less than the retries allow goes unnoticed.
        fake.fault(method="POST", status=502, text="<html>Bad gateway</html>", times=2)
        await dns.ensure_record("inst", NAME, "a.fly.dev")
    assert len(fake.records()) == 1


async def test_an_html_error_page_is_upstream(fake: FakeCloudflare) -> None:
    fake.fault(status=502, text="<html>Bad gateway</html>")
    async with provider_for(fake, retries=0) as dns:
        with pytest.raises(DnsError) as caught:
            await dns.list_records()
    assert caught.value.kind is DnsErrorKind.UPSTREAM
    assert "502" in str(caught.value) and "<html>" not in str(caught.value)


async def test_a_hang_is_a_timeout(fake: FakeCloudflare) -> None:
    fake.fault(method="DELETE", hang=5)
    fake.add(type="CNAME", name=NAME, content="a.fly.dev", comment="gentity instance inst")
    async with provider_for(fake, timeout=0.3, retries=0) as dns:
        started = time.monotonic()
        with pytest.raises(DnsError) as caught:
            await dns.delete_records("inst")
    assert time.monotonic() - started < 4  # the fake would answer after 5 s
    assert caught.value.kind is DnsErrorKind.TIMEOUT


async def test_a_refused_connection_is_upstream(fake: FakeCloudflare) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    fake.url = f"http://127.0.0.1:{port}/client/v4"
    async with provider_for(fake, retries=1) as dns:
        with pytest.raises(DnsError) as caught:
            await dns.verify()
    assert caught.value.kind is DnsErrorKind.UPSTREAM
    assert "could not reach Cloudflare" in str(caught.value)


async def test_verify(start_fake: Callable[..., FakeCloudflare]) -> None:
    fake = start_fake("--token", TOKEN)
    async with provider_for(fake) as dns:
        await dns.verify()
    async with provider_for(fake, zone_id="0" * 32) as dns:
        with pytest.raises(DnsError) as caught:
            await dns.verify()
    assert caught.value.kind is DnsErrorKind.UPSTREAM
    assert "7003" in str(caught.value)


async def test_refused_credentials_are_unauthorized_and_not_retried(
    start_fake: Callable[..., FakeCloudflare],
) -> None:
    fake = start_fake("--token", TOKEN)
    async with provider_for(fake, token="another-token-entirely") as dns:
        for call in (dns.verify(), dns.ensure_record("i", NAME, "a.fly.dev"), dns.list_records()):
            with pytest.raises(DnsError) as caught:
                await call
            assert caught.value.kind is DnsErrorKind.UNAUTHORIZED
    assert len(fake.requests()) == 1 + 3  # the fixture's zone lookup, then one try each


async def test_the_token_never_reaches_messages_or_logs(
    fake: FakeCloudflare, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    echo = {"success": False, "errors": [{"code": 6003, "message": f"bad header Bearer {TOKEN}"}]}
    fake.fault(status=400, body=echo)
    fake.fault(status=500, body=echo)
    fake.fault(status=429, body=echo, headers={"Retry-After": "0"})
    errors: list[DnsError] = []
    async with provider_for(fake, retries=0) as dns:
        for _ in range(3):
            with pytest.raises(DnsError) as caught:
                await dns.verify()
            errors.append(caught.value)
        assert TOKEN not in repr(dns) and TOKEN not in repr(dns._client)
        # Retries log why; the token stays out of those lines too.
        fake.fault(status=500, body=echo)
        async with provider_for(fake, retries=1) as retrying:
            await retrying.verify()
    assert [e.kind for e in errors] == [
        DnsErrorKind.UNAUTHORIZED,
        DnsErrorKind.UPSTREAM,
        DnsErrorKind.RATE_LIMITED,
    ]
    for error in errors:
        assert TOKEN not in str(error) and "[token]" in str(error)
    assert "retrying" in caplog.text
    assert TOKEN not in caplog.text
