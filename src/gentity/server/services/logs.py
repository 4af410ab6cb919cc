"""An instance's log: recent records, and a stream of new ones, from its provider."""

from __future__ import annotations

from collections.abc import AsyncIterator

from gentity import models
from gentity.server.context import AppContext
from gentity.server.db.orm import Instance
from gentity.server.services.errors import Conflict
from gentity.server.services.instances import handle_of, provider_for

LogStream = AsyncIterator[tuple[str, dict[str, str]]]
"""``(cursor, record)`` pairs as the provider reads them."""


async def tail(ctx: AppContext, row: Instance, lines: int) -> list[models.LogLine]:
    """The last ``lines`` records, oldest first; none before the instance has a machine."""
    if row.provider_ref is None:
        return []
    records = await provider_for(ctx, row).tail_logs(handle_of(row), lines)
    return [models.LogLine.model_validate(r) for r in records]


async def follow(ctx: AppContext, row: Instance, cursor: str | None, lines: int) -> LogStream:
    """New records from ``cursor`` on; without one, the last ``lines`` records first."""
    if row.provider_ref is None:
        raise Conflict("the instance has no machine yet")
    provider, handle = provider_for(ctx, row), handle_of(row)
    if cursor is None:
        cursor = await provider.log_cursor_before(handle, lines)
    return provider.follow_logs(handle, cursor)
