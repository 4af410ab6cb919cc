"""Keeping secrets out of the instance's log: exact values are replaced before a line is written.

Standard library only.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

#: What a secret value becomes in the log.
REDACTED: Final = "[redacted]"
#: Shorter values are not redacted: hiding every "1" or "yes" would say more than it hides.
MIN_SECRET: Final = 8


class Redactor:
    """Replaces every exact occurrence of the secret values it was given with :data:`REDACTED`.

    Only plain text is matched: callers redact lines after escape sequences are stripped, so
    a colour code in the middle of a printed key does not hide it. Values shorter than
    :data:`MIN_SECRET` are ignored. An empty redactor is falsy and returns text unchanged.
    """

    __slots__ = ("_values",)

    def __init__(self, values: Iterable[str] = ()) -> None:
        # Longest first, so a secret that contains another is replaced whole.
        found = {v for v in values if len(v) >= MIN_SECRET}
        self._values: tuple[str, ...] = tuple(sorted(found, key=len, reverse=True))

    def __bool__(self) -> bool:
        return bool(self._values)

    def occurs_in(self, text: str) -> bool:
        """True if a secret occurs in ``text`` (one scan per secret, for a whole chunk)."""
        return any(value in text for value in self._values)

    def __call__(self, text: str) -> str:
        for value in self._values:
            if value in text:
                text = text.replace(value, REDACTED)
        return text

    def unsafe_tail(self, text: str) -> int:
        """Length of the longest end of ``text`` that is the start of a secret (0 if none).

        That end must not be written yet: the rest of the secret may be on its way.
        """
        longest = 0
        for value in self._values:
            first = value[0]
            index = text.find(first, max(0, len(text) - len(value) + 1))
            while index >= 0 and len(text) - index > longest:
                if value.startswith(text[index:]):
                    longest = len(text) - index
                    break
                index = text.find(first, index + 1)
        return longest
