"""When is an agent ready? Up, and waiting for input.

A process that exists is not yet an agent one can talk to: it may still be loading, drawing
a sign-in menu, or about to crash. The catalog gives each agent a rule (see
:class:`gentity.guest.config.ReadyRule`): its output has been quiet for a while (it waits
for input) and, when a pattern is given, its screen text has shown it (a prompt). Standard
library only.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import Final

from gentity.guest.config import ReadyRule

#: How much recent screen text a prompt pattern is matched against.
TEXT_TAIL: Final = 8192

# Cursor moves: a TUI that redraws in place skips over blanks with them instead of printing
# spaces (``Claude\x1b[19GCode``), so each stands for a space between words.
_MOVES = re.compile(rb"\x1b\[[0-9;]*[ABCDEFGHdf]")
_ESCAPES = re.compile(
    rb"\x1b\[[0-?]*[ -/]*[@-~]"  # CSI
    rb"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"  # OSC
    rb"|\x1b[P^_X][^\x1b]*(?:\x1b\\)?"  # DCS, PM, APC, SOS
    rb"|\x1b[ -/]*[0-~]"  # other ESC sequences
    rb"|[\x00-\x08\x0b-\x1f\x7f]"  # controls other than tab and newline
)


def screen_text(data: bytes) -> str:
    """Output as text: cursor moves as a space, other escape sequences and controls
    removed, invalid UTF-8 replaced."""
    return _ESCAPES.sub(b"", _MOVES.sub(b" ", data)).decode("utf-8", "replace")


class Readiness:
    """Calls ``on_ready`` once, when the rule first holds for this run of the agent."""

    def __init__(self, rule: ReadyRule, on_ready: Callable[[], None]) -> None:
        self._quiet = rule.quiet_ms / 1000
        self._pattern = re.compile(rule.pattern) if rule.pattern else None
        self._matched = self._pattern is None
        self._tail = b""
        self._on_ready = on_ready
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None
        self.ready = False
        self._arm()  # a program that prints nothing and waits is ready after the quiet time

    def feed(self, data: bytes) -> None:
        """Output arrived: the quiet period starts again."""
        if self.ready:
            return
        if not self._matched and self._pattern is not None:
            self._tail = (self._tail + data)[-TEXT_TAIL:]
            self._matched = self._pattern.search(screen_text(self._tail)) is not None
        self._arm()

    def cancel(self) -> None:
        """The run is over: never call ``on_ready`` for it."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_later(self._quiet, self._fire)

    def _fire(self) -> None:
        self._timer = None
        if self._matched and not self.ready:
            self.ready = True
            self._on_ready()
