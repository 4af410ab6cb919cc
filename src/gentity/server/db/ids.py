"""Identifiers and timestamps shared by every table."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime

_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"


def new_id() -> str:
    """A 25-character lowercase id, ``c`` + 24 random base-36 characters (~124 bits)."""
    return "c" + "".join(secrets.choice(_ALPHABET) for _ in range(24))


def random_slug(length: int) -> str:
    """Random ``[a-z0-9]`` characters, e.g. for subdomains."""
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


def utcnow() -> datetime:
    """Timezone-aware now in UTC (the database stores UTC)."""
    return datetime.now(UTC)
