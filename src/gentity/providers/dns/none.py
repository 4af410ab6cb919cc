"""The ``none`` DNS provider: no records at all.

The embedded default. Instances are still reachable by subdomain locally, because browsers
resolve every ``*.localhost`` name to the loopback address without asking DNS.
"""

from __future__ import annotations

from gentity.providers.dns.base import DnsProvider, DnsRecord
from gentity.settings import Settings


class NoDns(DnsProvider):
    """Makes no records, so it never has any to find or delete."""

    name = "none"

    @classmethod
    def from_settings(cls, settings: Settings) -> NoDns:
        return cls()

    async def ensure_record(self, instance_id: str, name: str, target: str) -> None:
        return None

    async def delete_records(self, instance_id: str) -> None:
        return None

    async def list_records(self) -> list[DnsRecord]:
        return []

    async def delete_record(self, record: DnsRecord) -> None:
        return None

    async def verify(self) -> None:
        return None
