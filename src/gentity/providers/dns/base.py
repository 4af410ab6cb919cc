"""The DNS provider interface.

Every instance has a subdomain (``cl-x7k2m9``). With a DNS provider, the control plane gives it
a record ``<subdomain>.<base domain>`` pointing at wherever that subdomain is served (see
``docs/dns.md``), and removes it when the instance is destroyed.

A provider knows nothing of the server, users or the database: it is told an instance id, a
fully qualified name and a target, and it marks each record it makes with the instance id, so
that :meth:`DnsProvider.list_records` finds them again and :meth:`DnsProvider.sweep` can remove
the records of instances that no longer exist (a destroy that failed half-way, a lost server).
"""

from __future__ import annotations

import abc
import ipaddress
from collections.abc import Collection
from dataclasses import dataclass
from enum import StrEnum
from typing import ClassVar


class DnsErrorKind(StrEnum):
    """Why a DNS call failed, for callers that retry some failures and report others."""

    UNAUTHORIZED = "unauthorized"
    """The credentials were refused or lack a permission: retrying will not help."""
    RATE_LIMITED = "rate_limited"
    """The provider asked us to slow down for longer than we are willing to wait."""
    CONFLICT = "conflict"
    """The name is taken by a record this control plane did not make for that instance."""
    UPSTREAM = "upstream"
    """The provider failed or refused the request (5xx, an error body, a broken answer)."""
    TIMEOUT = "timeout"
    """The provider did not answer in time."""


class DnsError(Exception):
    """A DNS call failed. The message is safe to show a user: it never contains a credential."""

    def __init__(self, kind: DnsErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


@dataclass(frozen=True)
class DnsRecord:
    """A record this control plane made, as the provider reports it."""

    id: str
    name: str
    """Fully qualified, lower case, without the trailing dot."""
    type: str
    content: str
    instance_id: str


def record_type(target: str) -> str:
    """``A`` or ``AAAA`` for an IP address, else ``CNAME`` (a host name)."""
    try:
        address = ipaddress.ip_address(target)
    except ValueError:
        return "CNAME"
    return "A" if address.version == 4 else "AAAA"


class DnsProvider(abc.ABC):
    """Create, find and delete the records of instances.

    All methods are coroutines. :meth:`ensure_record` and :meth:`delete_records` are
    idempotent, so a caller may simply repeat them after any failure. Failures raise
    :class:`DnsError`.
    """

    name: ClassVar[str]

    @abc.abstractmethod
    async def ensure_record(self, instance_id: str, name: str, target: str) -> None:
        """Make ``name`` (fully qualified) point at ``target``, a host name or an IP address.

        Succeeds when the record already exists for this instance, and repoints it when it
        exists with another target. Raises :class:`DnsError` (``conflict``) when the name
        belongs to a record made for anything else.
        """

    @abc.abstractmethod
    async def delete_records(self, instance_id: str) -> None:
        """Remove every record made for ``instance_id``. Succeeds when there is none."""

    @abc.abstractmethod
    async def list_records(self) -> list[DnsRecord]:
        """Every record this control plane made, for all instances."""

    @abc.abstractmethod
    async def delete_record(self, record: DnsRecord) -> None:
        """Remove one record found by :meth:`list_records`. Succeeds when it is already gone."""

    async def sweep(self, known_instance_ids: Collection[str]) -> list[DnsRecord]:
        """Remove the records of instances not in ``known_instance_ids``; return them.

        ``known_instance_ids`` must hold every instance that may still own a record (all that
        are not destroyed), or their records go too.
        """
        known = set(known_instance_ids)
        removed = []
        for record in await self.list_records():
            if record.instance_id not in known:
                await self.delete_record(record)
                removed.append(record)
        return removed

    @abc.abstractmethod
    async def verify(self) -> None:
        """Check at start-up that the credentials work and reach the zone; raise if not."""

    async def close(self) -> None:  # noqa: B027 (optional hook, empty by default)
        """Release the HTTP client."""
