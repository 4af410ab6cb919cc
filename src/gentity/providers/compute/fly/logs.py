"""A stopped instance's log as Fly's logs API keeps it: the records its guest echoed to
stdout (a running instance's log is read through its guest)."""

from __future__ import annotations

import json
from typing import Any

from gentity.providers.compute.fly.api import FlyApi

Json = dict[str, Any]


def echoed(entry: Json) -> dict[str, str] | None:
    """The record in a line the guest echoed to stdout; None for any other output."""
    try:
        record = json.loads(str(entry.get("message", "")))
    except ValueError:
        return None
    if not isinstance(record, dict) or "message" not in record:
        return None
    return {str(k): str(v) for k, v in record.items()}


async def tail(api: FlyApi, app: str, machine_id: str, lines: int) -> list[dict[str, str]]:
    """The last ``lines`` echoed records of the latest page (at most 100 lines of output)."""
    page = await api.logs(app, instance=machine_id)
    records = [r for entry in page.entries if (r := echoed(entry)) is not None]
    return records[-lines:] if lines > 0 else []
