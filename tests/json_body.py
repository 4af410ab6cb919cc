"""Typed access to parsed JSON in tests: the value's shape is checked, not assumed."""

from __future__ import annotations

from typing import Any


def json_object(value: object) -> dict[str, Any]:
    """``value`` (from ``json.loads`` or ``response.json()``), which must be a JSON object."""
    assert isinstance(value, dict), f"expected a JSON object, got {value!r}"
    return value
