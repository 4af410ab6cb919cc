"""Instance subdomain records: made with the instance, removed with it, swept when orphaned.

The records point every ``<subdomain>.<base domain>`` at the control plane (or
``GENTITY_DNS_TARGET``), which serves the subdomain itself (see docs/dns.md). With the ``none``
DNS provider, or without a base domain (a local run on ``*.localhost``), there is nothing to do.
"""

from __future__ import annotations

import logging

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from gentity.providers.compute.base import ProviderError
from gentity.providers.dns.base import DnsError
from gentity.server.context import AppContext
from gentity.server.db.orm import Instance

log = logging.getLogger(__name__)


def record_name(ctx: AppContext, subdomain: str) -> str | None:
    domain = ctx.settings.instance_domain
    return f"{subdomain}.{domain}" if domain else None


async def ensure_record(ctx: AppContext, inst: Instance) -> None:
    """Make the instance's record. A DNS failure is an upstream failure like a provider's: the
    create fails with its message, and nothing else has been made yet (records come first)."""
    name = record_name(ctx, inst.subdomain)
    domain = ctx.settings.instance_domain
    if name is None or domain is None or ctx.dns.name == "none":
        return
    try:
        await ctx.dns.ensure_record(inst.id, name, ctx.settings.dns_target or domain)
    except DnsError as exc:
        raise ProviderError(f"DNS: {exc}") from exc


async def remove_records(ctx: AppContext, inst: Instance) -> None:
    """Remove the instance's records; idempotent. A failure leaves the teardown to be retried."""
    if ctx.dns.name == "none":
        return
    try:
        await ctx.dns.delete_records(inst.id)
    except DnsError as exc:
        raise ProviderError(f"DNS: {exc}") from exc


async def sweep(ctx: AppContext, session: AsyncSession) -> None:
    """Remove records whose instance is destroyed or unknown (a create killed before its row
    was saved, a row deleted by hand). Every replica may run it: deletions are idempotent.

    The records are listed before the rows are read: a row is committed before its record is
    made, so every record listed belongs to a row the query then sees."""
    if ctx.dns.name == "none":
        return
    try:
        records = await ctx.dns.list_records()
        known = set(
            await session.scalars(select(Instance.id).where(Instance.destroyed_at.is_(None)))
        )
        for record in records:
            if record.instance_id not in known:
                await ctx.dns.delete_record(record)
                log.info(
                    "removed DNS record %s of gone instance %s", record.name, record.instance_id
                )
    except DnsError as exc:
        log.warning("DNS sweep failed: %s", exc)
