"""The ``cloudflare`` DNS provider: one record per instance in one zone.

Each record carries the comment ``gentity instance <id>``. That comment is how records are
found again (``comment.exact`` for one instance, ``comment.startswith`` for all); comments work
on every plan, unlike tags. A zone should therefore hold the records of one Gentity deployment
only, or a sweep by one deployment would remove the other's.
"""

from __future__ import annotations

from typing import Any

from gentity.providers.dns.base import DnsError, DnsErrorKind, DnsProvider, DnsRecord, record_type
from gentity.providers.dns.cloudflare.client import CloudflareClient, CloudflareError
from gentity.settings import Settings

COMMENT_PREFIX = "gentity instance "

# 81053: an A, AAAA or CNAME record with that host exists; 81054: a CNAME with that host
# exists; 81057: an identical record exists.
_DUPLICATE_CODES = frozenset({81053, 81054, 81057})
_NOT_FOUND = 81044
AUTOMATIC_TTL = 1


class CloudflareDns(DnsProvider):
    """Records in the zone ``zone_id``, DNS only (not proxied), with an automatic TTL."""

    name = "cloudflare"

    def __init__(self, client: CloudflareClient, zone_id: str) -> None:
        if not zone_id:
            raise ValueError("a Cloudflare zone id is required")
        self._client = client
        self._zone_id = zone_id
        self._records = f"/zones/{zone_id}/dns_records"

    @classmethod
    def from_settings(cls, settings: Settings) -> CloudflareDns:
        if settings.cloudflare_api_token is None or not settings.cloudflare_zone_id:
            raise ValueError(
                "the cloudflare DNS provider needs GENTITY_CLOUDFLARE_API_TOKEN "
                "and GENTITY_CLOUDFLARE_ZONE_ID"
            )
        client = CloudflareClient(
            settings.cloudflare_api_url, settings.cloudflare_api_token.get_secret_value()
        )
        return cls(client, settings.cloudflare_zone_id)

    def __repr__(self) -> str:
        return f"CloudflareDns(zone_id={self._zone_id!r})"

    async def ensure_record(self, instance_id: str, name: str, target: str) -> None:
        name = _normalize(name)
        wanted = {"type": record_type(target), "content": target}
        # Create first: in the common case that is the only call. A duplicate means an earlier
        # attempt got through, or the name is someone else's; the lookup tells which.
        for _ in range(2):
            try:
                await self._client.call(
                    "POST",
                    self._records,
                    json={
                        **wanted,
                        "name": name,
                        "ttl": AUTOMATIC_TTL,
                        "proxied": False,
                        "comment": COMMENT_PREFIX + instance_id,
                    },
                )
                return
            except CloudflareError as exc:
                if not exc.codes & _DUPLICATE_CODES:
                    raise
            existing = await self._raw({"name": name})
            if any(r.get("comment") != COMMENT_PREFIX + instance_id for r in existing):
                raise DnsError(
                    DnsErrorKind.CONFLICT,
                    f"{name} already has a DNS record that was not made for this instance",
                )
            if existing:
                mine = existing[0]
                if (mine["type"], mine["content"]) != (wanted["type"], wanted["content"]):
                    await self._client.call("PATCH", f"{self._records}/{mine['id']}", json=wanted)
                return
            # The record that was in the way has just been deleted: create again.
        raise DnsError(DnsErrorKind.CONFLICT, f"{name} keeps changing; try again")

    async def delete_records(self, instance_id: str) -> None:
        # Listed in full first: deleting while paging would shift later pages.
        for raw in await self._raw({"comment.exact": COMMENT_PREFIX + instance_id}):
            await self.delete_record(_record(raw))

    async def list_records(self) -> list[DnsRecord]:
        return [
            _record(raw)
            for raw in await self._raw({"comment.startswith": COMMENT_PREFIX})
            if str(raw.get("comment")).startswith(COMMENT_PREFIX)
        ]

    async def delete_record(self, record: DnsRecord) -> None:
        try:
            await self._client.call("DELETE", f"{self._records}/{record.id}")
        except CloudflareError as exc:
            if _NOT_FOUND not in exc.codes:
                raise

    async def verify(self) -> None:
        envelope = await self._client.call("GET", "/user/tokens/verify")
        status = (envelope.get("result") or {}).get("status")
        if status != "active":
            raise DnsError(DnsErrorKind.UNAUTHORIZED, f"the Cloudflare API token is {status}")
        # The token is valid; this shows it may read the zone's records too.
        await self._client.call("GET", self._records, params={"per_page": 5})

    async def close(self) -> None:
        await self._client.close()

    async def _raw(self, filters: dict[str, str | int]) -> list[dict[str, Any]]:
        """Every record of the zone that matches ``filters``, as Cloudflare describes it."""
        return [raw async for page in self._client.pages(self._records, filters) for raw in page]


def _normalize(name: str) -> str:
    # Cloudflare answers with lower-case names without the trailing dot; compare like with like.
    name = name.strip().rstrip(".").lower()
    if "." not in name:
        raise ValueError(f"a record name must be fully qualified, not {name!r}")
    return name


def _record(raw: dict[str, Any]) -> DnsRecord:
    """Our view of a record made by this control plane."""
    comment = str(raw["comment"])
    return DnsRecord(
        id=str(raw["id"]),
        name=str(raw["name"]),
        type=str(raw["type"]),
        content=str(raw["content"]),
        instance_id=comment[len(COMMENT_PREFIX) :],
    )
