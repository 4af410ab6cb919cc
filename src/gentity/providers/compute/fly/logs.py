"""An instance's log as Fly's logs API keeps it: the records the guest echoed to stdout.

The API pages lines after a ``next_token`` (a nanosecond timestamp). A cursor here is
``"<token>.<skip>"``: the lines after ``token``, of which the first ``skip`` were already
seen. Each line's cursor is taken from its own timestamp (minus one nanosecond, counting the
lines that share it), so resuming from any line is exact: no line twice, none missed.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from gentity.providers.compute.fly.api import FlyApi
from gentity.providers.compute.fly.errors import FlyApiError, FlyErrorKind

Json = dict[str, Any]

_CURSOR = re.compile(r"(\d{1,20})\.(\d{1,9})")
_STAMP = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?Z")
_PASSING = (FlyErrorKind.UPSTREAM, FlyErrorKind.RATE_LIMITED, FlyErrorKind.TIMEOUT)
MAX_FAILURES = 10


def echoed(entry: Json) -> dict[str, str] | None:
    """The record in a line the guest echoed to stdout; None for any other output."""
    try:
        record = json.loads(str(entry.get("message", "")))
    except ValueError:
        return None
    if not isinstance(record, dict) or "message" not in record:
        return None
    return {str(k): str(v) for k, v in record.items()}


def timestamp_ns(entry: Json) -> int:
    match = _STAMP.fullmatch(str(entry.get("timestamp", "")))
    if match is None:
        raise FlyApiError(FlyErrorKind.UPSTREAM, "a log line without a valid timestamp")
    seconds = datetime.strptime(match.group(1), "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)
    return int(seconds.timestamp()) * 1_000_000_000 + int((match.group(2) or "").ljust(9, "0"))


@dataclass
class _Position:
    """Where a reader is: the last line's timestamp and how many lines had it."""

    ns: int = -1
    same: int = 0

    def advance(self, entry: Json) -> None:
        ns = timestamp_ns(entry)
        self.same = self.same + 1 if ns == self.ns else 1
        self.ns = ns

    def cursor(self) -> str:
        """Resume right after the line just advanced over."""
        return f"{self.ns - 1}.{self.same}"


def parse_cursor(cursor: str) -> tuple[str, int]:
    match = _CURSOR.fullmatch(cursor)
    if match is None:
        raise ValueError("not a log cursor this server gave out")
    return match.group(1), int(match.group(2))


async def tail(api: FlyApi, app: str, machine_id: str, lines: int) -> list[dict[str, str]]:
    """The last ``lines`` echoed records of the latest page (at most 100 lines of output)."""
    page = await api.logs(app, instance=machine_id)
    records = [r for entry in page.entries if (r := echoed(entry)) is not None]
    return records[-lines:] if lines > 0 else []


async def cursor_before(api: FlyApi, app: str, machine_id: str, lines: int) -> str:
    """A cursor whose follow replays the last ``lines`` records of the latest page first."""
    entries = (await api.logs(app, instance=machine_id)).entries
    if not entries:
        return "0.0"
    position = _Position()
    before: list[str] = []  # the cursor right before each echoed record
    for entry in entries:
        start = f"{position.ns - 1}.{position.same}" if position.ns >= 0 else None
        position.advance(entry)
        if start is None:
            start = f"{position.ns - 1}.{position.same - 1}"
        if echoed(entry) is not None:
            before.append(start)
    if lines <= 0 or not before:
        return position.cursor()
    if lines >= len(before):
        return before[0]
    return before[-lines]


async def follow(
    api: FlyApi, app: str, machine_id: str, cursor: str
) -> AsyncIterator[tuple[str, dict[str, str]]]:
    """``(cursor, record)`` for every echoed record after ``cursor``, polling as ``fly logs``
    does: at once after a line, backing off to 4 s while there is none."""
    token, skip = parse_cursor(cursor)
    position = _Position(ns=int(token) + 1, same=skip)
    delay, failures = 0.0, 0
    while True:
        try:
            page = await api.logs(app, next_token=token, instance=machine_id)
        except FlyApiError as exc:
            failures += 1
            if exc.kind not in _PASSING or failures >= MAX_FAILURES:
                raise
            await asyncio.sleep(min(max(delay * 2, 0.064), 4.0))
            continue
        failures = 0
        entries = page.entries[skip:]
        skip = max(0, skip - len(page.entries))
        for entry in entries:
            position.advance(entry)
            record = echoed(entry)
            if record is not None:
                yield position.cursor(), record
        token = page.next_token or token
        delay = 0.0 if entries else min(max(delay * 2, 0.064), 4.0)
        await asyncio.sleep(delay)
