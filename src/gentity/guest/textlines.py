"""Terminal output as clean text lines: escape sequences removed, one line per newline.

Standard library only.
"""

from __future__ import annotations

import asyncio
import codecs
import re
import time
from collections.abc import Callable

from gentity.guest.redact import Redactor

# Escape sequences and control characters that make no sense in a text log.
_TERMINAL_NOISE = re.compile(
    r"\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"  # OSC (window title, hyperlinks)
    r"|\x1b[P^_][^\x1b]*(?:\x1b\\)?"  # DCS / PM / APC strings
    r"|\x1b\[[0-?]*[ -/]*[@-~]"  # CSI (colours, cursor movement)
    r"|\x1b[ -/]*[0-~]"  # other ESC sequences (charsets, keypad mode)
    r"|\x9b[0-?]*[ -/]*[@-~]"  # 8-bit CSI
    r"|[\x00-\x08\x0b-\x1f\x7f]"  # remaining controls incl. CR and lone ESC; keeps \t \n
)


# Full-screen programs (Ink-based agents among them) move the cursor right instead of
# printing spaces; in a text log that gap should stay a gap. Diff-based renderers (ratatui,
# Ink) also jump over blank cells with absolute moves (CUP, CHA, HPA, HPR): the column the
# jump lands on is unknown here, but a word boundary it certainly is.
_CURSOR_FORWARD = re.compile(r"\x1b\[(\d{0,3})C")
_CURSOR_JUMP = re.compile(r"(?<=\S)(?:\x1b\[[\d;]*[HfG`a])+(?=[^\s\x1b])")


_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def strip_terminal(text: str) -> str:
    """Remove ANSI/VT escape sequences, carriage returns and other control characters."""
    if "\x1b" in text or "\x9b" in text:
        text = _CURSOR_FORWARD.sub(lambda m: " " * int(m.group(1) or 1), text)
        text = _CURSOR_JUMP.sub(" ", text)
        return _TERMINAL_NOISE.sub("", text)
    # Plain output (the bulk of a build log or a `cat`): only CRs and stray controls to drop,
    # which is several times faster than the full pattern above.
    text = text.replace("\r", "")
    return _CONTROLS.sub("", text) if _CONTROLS.search(text) else text


class LineLogger:
    """Turns a terminal byte stream into log lines.

    Decodes UTF-8 incrementally (invalid bytes become U+FFFD), strips escape
    sequences, and emits one line per newline. A partial line (e.g. a prompt) is
    emitted after ``quiet`` seconds without output; over-long lines are emitted
    in ``max_line`` pieces. Must be fed from a running event loop.

    With ``redact``, lines are redacted whole, before they are cut into pieces; and
    a partial line is not cut where its end could be the start of a secret (a
    program that prints a key in two writes with a pause between them): that end
    waits for the rest of the line.
    """

    def __init__(
        self,
        emit: Callable[[str], None] | None = None,
        *,
        emit_lines: Callable[[list[str]], None] | None = None,
        quiet: float = 0.2,
        max_line: int = 16384,
        redact: Redactor | None = None,
    ) -> None:
        # ``emit_lines`` receives all the lines of one chunk at once (cheaper to write).
        if emit_lines is None:
            if emit is None:
                raise TypeError("LineLogger needs emit or emit_lines")
            single = emit

            def emit_lines(lines: list[str]) -> None:
                for line in lines:
                    single(line)

        self._emit_lines = emit_lines
        self._redact = redact or Redactor()
        self._quiet = quiet
        self._max_line = max_line
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._partial = ""
        self._last_data = 0.0
        self._timer: asyncio.TimerHandle | None = None

    def feed(self, data: bytes) -> None:
        """Process a chunk of raw output."""
        text = self._partial + self._decoder.decode(data)
        complete, newline, self._partial = text.rpartition("\n")
        out: list[str] = []
        if newline:
            # Escape sequences never span a newline, so the complete lines of the chunk
            # are cleaned in one pass.
            cleaned = strip_terminal(complete)
            lines = cleaned.split("\n")
            if max(map(len, lines)) <= self._max_line and not self._redact.occurs_in(cleaned):
                # The bulk of a busy log: nothing to redact or cut, blank lines left out.
                out = [clean for line in lines if (clean := line.strip())]
            else:
                for line in lines:
                    self._pieces(line.strip(), out)
        while len(self._partial) > self._max_line:
            piece = strip_terminal(self._partial[: self._max_line])
            clean, held = self._split_unsafe(piece, limit=self._max_line // 2)
            self._pieces(clean.strip(), out)
            # The held end is clean text already; what follows it is still raw.
            self._partial = held + self._partial[self._max_line :]
        if out:
            self._emit_lines(out)
        self._last_data = time.monotonic()
        if self._partial and self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._quiet, self._on_timer)

    def close(self) -> None:
        """Stop the quiet timer and emit any partial line."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._partial += self._decoder.decode(b"", final=True)
        self._emit_line(self._partial)
        self._partial = ""

    def _on_timer(self) -> None:
        # One timer per quiet period rather than one per chunk: re-arm if output
        # arrived since it was scheduled.
        self._timer = None
        remaining = self._last_data + self._quiet - time.monotonic()
        if remaining > 0.005:
            self._timer = asyncio.get_running_loop().call_later(remaining, self._on_timer)
        elif self._partial:
            clean, self._partial = self._split_unsafe(strip_terminal(self._partial))
            # Whatever is held waits for more output (or close()); no timer until then.
            out: list[str] = []
            self._pieces(clean.strip(), out)
            if out:
                self._emit_lines(out)

    def _split_unsafe(self, clean: str, limit: int | None = None) -> tuple[str, str]:
        """``clean`` cut into what may be written now and an end that may begin a secret
        (held only if no longer than ``limit``, so that an over-long line still advances)."""
        if not self._redact:
            return clean, ""
        held = self._redact.unsafe_tail(clean)
        if not held or (limit is not None and held > limit):
            return clean, ""
        return clean[:-held], clean[-held:]

    def _emit_line(self, line: str) -> None:
        out: list[str] = []
        self._pieces(strip_terminal(line).strip(), out)
        if out:
            self._emit_lines(out)

    def _pieces(self, clean: str, out: list[str]) -> None:
        if self._redact:
            clean = self._redact(clean)  # before cutting, so no secret straddles a cut
        for start in range(0, len(clean), self._max_line):
            out.append(clean[start : start + self._max_line])
