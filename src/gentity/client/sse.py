"""Reading ``text/event-stream`` (the followed-logs stream) and pacing reconnects.

Only what the log stream uses: ``id:``, ``data:`` (several lines join with newlines), comments
(``: keep-alive``), ``event:`` (the exec stream names its events) and blank lines that end an
event. ``retry:`` is accepted and ignored.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Event:
    data: str
    id: str | None
    """The event's ``id:``, or None when it had none (the cursor then stays where it was)."""
    name: str = "message"
    """The event's ``event:``, ``message`` when it had none."""


class SSEDecoder:
    """Feed it lines (without their line ending); it hands back each completed event."""

    def __init__(self) -> None:
        self._data: list[str] = []
        self._id: str | None = None
        self._name = "message"

    def feed(self, line: str) -> Event | None:
        if line == "":
            if not self._data and self._id is None:
                self._name = "message"
                return None
            # An id-only event still moves the cursor; its empty data is skipped by readers.
            event = Event("\n".join(self._data), self._id, self._name)
            self._data, self._id, self._name = [], None, "message"
            return event
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "id" and "\0" not in value:
            self._id = value
        elif name == "event":
            self._name = value
        return None


class Backoff:
    """Delays between reconnect attempts: ``first`` doubling to ``cap``, with jitter so a
    fleet of followers does not reconnect in lockstep after a server restart."""

    def __init__(self, first: float = 0.5, cap: float = 5.0) -> None:
        self.first = first
        self.cap = cap
        self.attempts = 0

    def next_delay(self) -> float:
        delay: float = min(self.cap, self.first * 2.0**self.attempts)
        self.attempts += 1
        jitter: float = random.uniform(0.5, 1.0)  # noqa: S311 (not a secret)
        return delay * jitter

    def reset(self) -> None:
        self.attempts = 0
