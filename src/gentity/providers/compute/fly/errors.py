"""One exception for every failed Fly API call, classified so callers can decide what to do."""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class FlyErrorKind(StrEnum):
    """What went wrong, in the terms a caller acts on."""

    NOT_FOUND = "not_found"
    NAME_TAKEN = "name_taken"
    CAPACITY = "capacity"
    """No room in the region: try another one."""
    LEASE_HELD = "lease_held"
    """Someone else holds the machine's lease: retry later."""
    RATE_LIMITED = "rate_limited"
    TIMEOUT = "timeout"
    """A ``wait`` ran out (408) or the request itself timed out."""
    UNAUTHORIZED = "unauthorized"
    REJECTED = "rejected"
    """The request was refused as invalid or in the wrong state (400, 409, 412, 422)."""
    UPSTREAM = "upstream"
    """Fly failed or could not be reached (5xx, connection errors)."""


class FlyApiError(Exception):
    """A Fly API call failed. ``message`` is Fly's own (or a description of a transport
    failure) and safe to show a user: it never contains the API token."""

    def __init__(self, kind: FlyErrorKind, message: str, status: int | None = None) -> None:
        super().__init__(f"Fly API: {message}")
        self.kind = kind
        self.message = message
        self.status = status


def classify(status: int, body: Any) -> tuple[FlyErrorKind, str]:
    """The kind and message of an error response, from its status and JSON body."""
    message = ""
    fly_status = ""
    if isinstance(body, dict):
        message = str(body.get("message") or body.get("error") or "")
        fly_status = str(body.get("status") or "")
    message = message or f"HTTP {status}"
    if fly_status == "insufficient_capacity":
        return FlyErrorKind.CAPACITY, message
    if fly_status == "name_taken" or "already been taken" in message:
        return FlyErrorKind.NAME_TAKEN, message
    if status == 401 or status == 403:
        return FlyErrorKind.UNAUTHORIZED, message
    if status == 404:
        return FlyErrorKind.NOT_FOUND, message
    if status == 408 or message.startswith("deadline_exceeded"):
        return FlyErrorKind.TIMEOUT, message
    if status == 409 and "lease currently held" in message:
        return FlyErrorKind.LEASE_HELD, message
    if status == 429:
        return FlyErrorKind.RATE_LIMITED, message
    if status >= 500:
        return FlyErrorKind.UPSTREAM, message
    return FlyErrorKind.REJECTED, message
