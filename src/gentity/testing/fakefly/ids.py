"""Identifiers and durations as the real API formats them."""

from __future__ import annotations

import re
import secrets
import string
import time
from datetime import UTC, datetime

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}


def machine_id() -> str:
    """14 lowercase hex characters, like ``1857156b526dd8``."""
    return secrets.token_hex(7)


def volume_id() -> str:
    """``vol_`` and 16 lowercase alphanumerics."""
    alphabet = string.ascii_lowercase + string.digits
    return "vol_" + "".join(secrets.choice(alphabet) for _ in range(16))


def app_id() -> str:
    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(16))


def nonce() -> str:
    return secrets.token_hex(6)


def ulid() -> str:
    """A 26-character ULID (48-bit millisecond time, 80 random bits): machine versions."""
    value = (int(time.time() * 1000) << 80) | secrets.randbits(80)
    return "".join(_CROCKFORD[(value >> shift) & 31] for shift in range(125, -1, -5))


def now_ms() -> int:
    return int(time.time() * 1000)


def iso(at: float | None = None) -> str:
    """RFC 3339 in UTC with a ``Z``, as Fly writes ``created_at``."""
    moment = datetime.fromtimestamp(time.time() if at is None else at, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_duration(value: object, *, int_unit: float = 1e-9) -> float:
    """Seconds from a Go duration string (``"30s"``, ``"1m30s"``) or an integer.

    JSON bodies carry integers as nanoseconds (fly-go's ``Duration``); query parameters carry
    them as seconds, hence ``int_unit``.
    """
    if isinstance(value, bool):
        raise ValueError("not a duration")
    if isinstance(value, int | float):
        return float(value) * int_unit
    if isinstance(value, str):
        text = value.strip()
        if text.isdigit():
            return int(text) * int_unit
        parts = _DURATION_PART.findall(text)
        if parts and "".join(n + u for n, u in parts) == text:
            return sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)
    raise ValueError(f"invalid duration {value!r}")
