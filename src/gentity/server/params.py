"""Strict parsing of numbers that arrive as text: query parameters, headers, cursors.

``str.isdigit()`` accepts "²" and "١٢" (and ``int()`` takes the second but not the first), and
``int()`` refuses more than 4,300 digits with a ValueError: a number from a client is therefore
ASCII digits only, of a bounded length, within a stated range, or a 400 naming the parameter.
"""

from __future__ import annotations

import re

from gentity.server.errors import ApiError

_DIGITS = re.compile(r"[0-9]{1,19}")
MAX_CURSOR = 2**63 - 1
"""Cursors are byte offsets; nothing past a signed 64-bit file offset can be real."""


def whole_number(raw: str, low: int, high: int) -> int | None:
    """``raw`` as an int when it is plain ASCII digits within ``[low, high]``, else None."""
    if not _DIGITS.fullmatch(raw):
        return None
    value = int(raw)
    return value if low <= value <= high else None


def parse_int(raw: str | None, name: str, low: int, high: int, default: int) -> int:
    """A numeric parameter, or ``default`` when absent; a 400 naming it when malformed."""
    if raw is None:
        return default
    value = whole_number(raw, low, high)
    if value is None:
        raise ApiError(400, f"{name}: must be a whole number from {low} to {high}")
    return value


def parse_cursor(raw: str | None, name: str) -> str | None:
    """A log cursor as given by the server (a decimal offset), checked before any stream opens."""
    if raw is None:
        return None
    if whole_number(raw, 0, MAX_CURSOR) is None:
        raise ApiError(400, f"{name}: not a cursor this server gave out")
    return raw


def parse_flag(raw: str | None, name: str) -> bool:
    """A yes/no query parameter: ``1``/``true`` or ``0``/``false`` (any case); absent is no."""
    if raw is None:
        return False
    value = raw.lower()
    if value not in ("0", "1", "true", "false"):
        raise ApiError(400, f"{name}: must be 1 or 0")
    return value in ("1", "true")
