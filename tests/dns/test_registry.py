"""DNS providers are chosen by name from settings; secrets stay out of every repr."""

from __future__ import annotations

from pathlib import Path

import pytest

from gentity.providers.dns.base import record_type
from gentity.providers.dns.cloudflare.provider import CloudflareDns
from gentity.providers.dns.none import NoDns
from gentity.providers.dns.registry import create_dns_provider
from gentity.settings import Settings
from tests.dns.conftest import TOKEN

pytestmark = pytest.mark.anyio


def settings(tmp_path: Path, **values: object) -> Settings:
    return Settings(data_dir=tmp_path, **values)  # type: ignore[arg-type]


async def test_none_is_the_default_and_does_nothing(tmp_path: Path) -> None:
    dns = create_dns_provider(settings(tmp_path))
    assert isinstance(dns, NoDns)
    await dns.verify()
    await dns.ensure_record("i", "cl-abc.example.com", "example.net")
    assert await dns.list_records() == []
    assert await dns.sweep([]) == []
    await dns.delete_records("i")
    await dns.close()


async def test_cloudflare_from_settings(tmp_path: Path) -> None:
    configured = settings(
        tmp_path,
        dns_provider="cloudflare",
        cloudflare_api_token=TOKEN,
        cloudflare_zone_id="a" * 32,
    )
    assert TOKEN not in repr(configured) and TOKEN not in str(configured.model_dump())
    dns = create_dns_provider(configured)
    assert isinstance(dns, CloudflareDns)
    assert TOKEN not in repr(dns)
    await dns.close()


@pytest.mark.parametrize(
    "values",
    [{}, {"cloudflare_zone_id": "a" * 32}, {"cloudflare_api_token": TOKEN}],
)
def test_cloudflare_needs_a_token_and_a_zone(tmp_path: Path, values: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="GENTITY_CLOUDFLARE_API_TOKEN"):
        create_dns_provider(settings(tmp_path, dns_provider="cloudflare", **values))


def test_an_unknown_provider_names_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cloudflare, none"):
        create_dns_provider(settings(tmp_path, dns_provider="route53"))


def test_record_type_follows_the_target() -> None:
    assert record_type("gentity.example.com") == "CNAME"
    assert record_type("192.0.2.1") == "A"
    assert record_type("2001:db8::1") == "AAAA"
