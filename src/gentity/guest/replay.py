"""The replay buffer: what a viewer that attaches later is sent first.

A byte log of the session replayed as is would hand the new viewer's terminal every *query*
the program ever sent (cursor position report ``ESC[6n``, device attributes ``ESC[c``,
colour queries ``OSC 11;?``, ``DECRQSS``, ...). The terminal answers them, and the answers
arrive at the program as typed input: a shell runs ``2R84;0;0c``, a dialog picks an entry
nobody chose. So the buffer keeps output through a :class:`SequenceFilter` that drops every
sequence that can make a terminal answer (and the ones that would act on the viewer's
machine, such as clipboard writes or notifications), however the sequence was split across
reads. Live viewers get the raw output: they answer queries that are asked now, which is
what the program wants.

The buffer is bounded; when old output falls off, the private modes it had set (alternate
screen, cursor visibility, bracketed paste, mouse reporting...) are kept and replayed first,
so the new viewer starts in the modes the rest of the log assumes. Standard library only.
"""

from __future__ import annotations

import re
from typing import Final

#: Longest control sequence (CSI, OSC) kept whole; longer ones are dropped as malformed.
MAX_SEQUENCE: Final = 4096

ESC: Final = 0x1B

# The common case in one step: text and the most frequent drawing sequences (SGR, cursor
# moves, erasing, charset selection), none of which can make a terminal answer.
_FAST = re.compile(
    rb"(?:[^\x05\x1b\xc2]+|\xc2(?=[^\x90\x98\x9b\x9d\x9e\x9f])"
    rb"|\x1b\[[0-9;:]*[@A-HJKLMPSTXdfmr]|\x1b[()][0B]|\x1b[78=>M])+"
)
# The first byte after a sequence's parameters and intermediates (CSI), or intermediates (ESC).
_AFTER_CSI_BODY = re.compile(rb"[^\x20-\x3f]")
_AFTER_ESC_BODY = re.compile(rb"[^\x20-\x2f]")
# Ends (or aborts) a control string: BEL (OSC only), ST as ESC \ or C1, CAN, SUB, or an
# ESC that starts something else (a terminal abandons the string there).
_STRING_END = re.compile(rb"\x07|\x1b\\|\xc2\x9c|[\x18\x1a]|\x1b(?=[^\\])|\x1b\Z|\xc2\Z")

_CSI_INTRO: Final = (b"\x1b[", b"\xc2\x9b")
_OSC_INTRO: Final = (b"\x1b]", b"\xc2\x9d")
# DCS, SOS, PM, APC: device control and application strings are never replayed (DECRQSS,
# XTGETTCAP, tmux passthrough, kitty graphics queries, sixel...).
_DROPPED_STRING_INTRO: Final = (
    b"\x1bP",
    b"\x1bX",
    b"\x1b^",
    b"\x1b_",
    b"\xc2\x90",
    b"\xc2\x98",
    b"\xc2\x9e",
    b"\xc2\x9f",
)

# CSI sequences that only draw or set modes, by (prefix, intermediates) -> final bytes.
# Everything else is dropped: device status and attributes (n, c, x), window operations and
# reports (t), mode and setting requests (DECRQM $p, XTVERSION >q, kitty ?u, DECRQTSR $u,
# DECRQPSR $w, DECRQCRA *y, XTQMODKEYS ?m, XTSMGRAPHICS ?S, locator ' |) and whatever a
# future terminal invents.
_SAFE_CSI: Final[dict[tuple[bytes, bytes], frozenset[int]]] = {
    (b"", b""): frozenset(b"@ABCDEFGHIJKLMPSTWXZ`abdefghjklmqrsu"),
    (b"?", b""): frozenset(b"hlJKrsW"),
    (b">", b""): frozenset(b"mpsTu"),
    (b"<", b""): frozenset(b"u"),
    (b"=", b""): frozenset(b"u"),
    (b"", b" "): frozenset(b"@Aq"),
    (b"", b"!"): frozenset(b"p"),
    (b"", b'"'): frozenset(b"pq"),
    (b"", b"'"): frozenset(b"}~"),
    (b"", b"$"): frozenset(b"rtvxz{"),
    (b"", b"*"): frozenset(b"x"),
}

# OSC commands that set titles, the working directory, hyperlinks, prompt marks or colours.
# A "?" anywhere in the arguments makes it a query; clipboard (52), notifications (9, 777)
# and vendor extensions are dropped.
_SAFE_OSC: Final = frozenset(
    {b"0", b"1", b"2", b"4", b"7", b"8", b"104", b"133", b"633"}
    | {str(n).encode() for n in (*range(10, 20), *range(110, 120))}
)

# ESC sequences (no CSI/OSC/strings): all draw or set modes except DECID (ESC Z), which is
# answered like device attributes. A stray ST (ESC \\) does nothing and goes too.
_DROPPED_ESC: Final = frozenset({b"\x1bZ", b"\x1b\\"})


def csi_is_safe(params: bytes, intermediates: bytes, final: int) -> bool:
    """True if the CSI sequence only draws or sets modes (never makes a terminal answer)."""
    prefix = params[:1] if params[:1] in (b"<", b"=", b">", b"?") else b""
    if not set(params[len(prefix) :]) <= set(b"0123456789;:"):
        return False
    return final in _SAFE_CSI.get((prefix, intermediates), frozenset())


def osc_is_safe(payload: bytes) -> bool:
    """True if the OSC command (text between introducer and terminator) is not a query."""
    fields = payload.split(b";")
    if fields[0] not in _SAFE_OSC:
        return False
    return not any(f.startswith(b"?") for f in fields[1:])


class SequenceFilter:
    """Streaming filter: removes every control sequence that makes a terminal answer.

    ``feed`` returns what is safe to replay; an incomplete sequence at the end of a chunk is
    held until the next one completes it. ``modes`` follows the private modes (DECSET) as the
    output sets them.
    """

    def __init__(self) -> None:
        self._held = b""  # an incomplete sequence from the end of the last chunk
        self._dropping_string = False  # inside a DCS/APC/... or oversized OSC being dropped
        self.modes: dict[int, bool] = {}

    def feed(self, data: bytes) -> bytes:
        """Return the replay-safe part of ``data`` (plus what completes held bytes)."""
        if self._held:
            data = self._held + data
            self._held = b""
        out = bytearray()
        pos = 0
        end = len(data)
        if self._dropping_string:
            pos = self._skip_string(data, 0)
            if pos < 0:
                return b""
        while pos < end:
            fast = _FAST.match(data, pos)
            if fast is not None:
                out += fast.group()
                pos = fast.end()
                continue
            start = pos  # a possible sequence starts here
            consumed = self._sequence(data, start, out)
            if consumed < 0:  # incomplete: hold it for the next chunk
                self._held = data[start:]
                if len(self._held) > MAX_SEQUENCE:  # never completes sensibly: drop
                    self._held = b""
                break
            pos = consumed
        return bytes(out)

    def _sequence(self, data: bytes, start: int, out: bytearray) -> int:
        """Handle the sequence at ``start``: returns the position after it (all of ``data``
        while a dropped string goes on past it), or -1 if it is incomplete."""
        head = data[start : start + 2]
        if head[:1] == b"\x05":  # ENQ: the terminal sends its answerback string
            return start + 1
        if len(head) < 2:
            return -1
        if head in _CSI_INTRO:
            return self._csi(data, start, out)
        if head in _OSC_INTRO:
            return self._osc(data, start, out)
        if head in _DROPPED_STRING_INTRO:
            self._dropping_string = True
            after = self._skip_string(data, start + 2)
            return len(data) if after < 0 else after
        # Plain ESC sequence: ESC, intermediates, final.
        final_at = _end_of_body(_AFTER_ESC_BODY, data, start + 1)
        if final_at >= len(data):
            return -1
        final = data[final_at]
        if 0x30 <= final <= 0x7E:
            sequence = data[start : final_at + 1]
            if sequence not in _DROPPED_ESC:
                out += sequence
                if sequence == b"\x1bc":  # full reset
                    self.modes.clear()
            return final_at + 1
        return final_at  # malformed: drop ESC and intermediates, go on with the byte

    def _csi(self, data: bytes, start: int, out: bytearray) -> int:
        body_start = start + 2
        final_at = _end_of_body(_AFTER_CSI_BODY, data, body_start)
        if final_at >= len(data):
            return -1 if final_at - start <= MAX_SEQUENCE else final_at
        final = data[final_at]
        if not 0x40 <= final <= 0x7E:
            # Malformed (a control, DEL or 8-bit byte inside): drop what came so far. What
            # follows has no introducer left, so it cannot become a query.
            return final_at
        raw = data[body_start:final_at]
        split = len(raw) - len(raw.lstrip(b"0123456789:;<=>?"))
        params, intermediates = raw[:split], raw[split:]
        if not set(intermediates) <= set(range(0x20, 0x30)):
            return final_at + 1  # parameter bytes after intermediates: malformed, drop
        if csi_is_safe(params, intermediates, final):
            out += data[start : final_at + 1]
            if params.startswith(b"?") and final in b"hl":
                for mode in params[1:].split(b";"):
                    if mode.isdigit():
                        self.modes[int(mode)] = final == ord("h")
        return final_at + 1

    def _osc(self, data: bytes, start: int, out: bytearray) -> int:
        match = _STRING_END.search(data, start + 2)
        if match is None or _trailing(data, match):  # no terminator yet
            if len(data) - start > MAX_SEQUENCE:
                self._dropping_string = True
                return len(data)
            return -1
        terminator = match.group()
        if terminator.startswith(b"\x1b") and terminator != b"\x1b\\":
            return match.start()  # aborted by the next sequence: drop it, go on there
        if terminator in (b"\x18", b"\x1a"):
            return match.end()  # cancelled
        payload = data[start + 2 : match.start()]
        if osc_is_safe(payload) and not any(b < 0x20 for b in payload):
            out += data[start : match.end()]
        return match.end()

    def _skip_string(self, data: bytes, pos: int) -> int:
        """Drop a control string up to its end; the position after it, or -1 if it goes on
        past ``data`` (a trailing ESC or 0xC2 is held: it may begin the terminator)."""
        match = _STRING_END.search(data, pos)
        while match is not None and match.group() == b"\x07":  # BEL does not end DCS & co.
            match = _STRING_END.search(data, match.end())
        if match is None:
            return -1
        terminator = match.group()
        if _trailing(data, match):
            self._held = data[match.start() :]
            return -1
        self._dropping_string = False
        if terminator.startswith(b"\x1b") and terminator != b"\x1b\\":
            return match.start()
        return match.end()


def _trailing(data: bytes, match: re.Match[bytes]) -> bool:
    """True if the match is a lone ESC or 0xC2 at the end: the next chunk says what it is."""
    return match.end() == len(data) and match.group() in (b"\x1b", b"\xc2")


# Private modes as they stand where the buffer begins; see ReplayBuffer._evict. Each pattern
# starts with a literal, which the regex engine looks for far faster than an alternation.
_MODE_CHANGE = re.compile(rb"\x1b(?:\[\?([0-9;]*)([hl])|c)")
_MODE_CHANGE_C1 = re.compile(rb"\xc2\x9b\?([0-9;]*)([hl])")
_ALT_SCREEN: Final = (1049, 1047, 47)
_DEFAULT_ON: Final = frozenset({7, 25})  # autowrap, cursor visible


class ReplayBuffer:
    """The most recent ``capacity`` bytes of replay-safe output, plus the modes to restore.

    ``getvalue()`` starts with the private modes that output no longer in the buffer had
    set, then the buffered output, which always begins at a sequence boundary.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._filter = SequenceFilter()
        self._buf = bytearray()
        self._base_modes: dict[int, bool] = {}

    @property
    def modes(self) -> dict[int, bool]:
        """The private modes (DECSET number -> set) the output has set so far."""
        return dict(self._filter.modes)

    @property
    def full_screen(self) -> bool:
        """True while a full-screen program seems to draw: it switched to the alternate
        screen (vim, less), to application cursor keys (top, htop) or hid the cursor (the
        agents' TUIs, which redraw in place on the main screen)."""
        modes = self._filter.modes
        return modes.get(25) is False or any(modes.get(m, False) for m in (*_ALT_SCREEN, 1))

    def append(self, data: bytes) -> None:
        """Add output, dropping queries and the oldest bytes beyond capacity."""
        self._buf += self._filter.feed(data)
        excess = len(self._buf) - self.capacity
        if excess > 0:
            self._evict(excess)

    def getvalue(self) -> bytes:
        """The bytes to send to a viewer that attaches now."""
        return self._preamble() + bytes(self._buf)

    def __len__(self) -> int:
        return len(self._buf)

    def _evict(self, excess: int) -> None:
        # Cut where a sequence or a line begins, so the buffer never starts inside an escape
        # sequence or a multibyte character; then remember the modes the evicted part set.
        buf = self._buf
        limit = min(len(buf), excess + MAX_SEQUENCE)
        # The first ESC at or after ``excess``, or the first byte after a newline.
        escape = buf.find(b"\x1b", excess, limit)
        newline = buf.find(b"\n", excess - 1, limit - 1)
        cut = min(
            escape if escape >= 0 else limit,
            newline + 1 if newline >= 0 else limit,
        )
        if cut == limit:  # a long run of text: any character boundary will do
            cut = excess
            while cut < len(buf) and 0x80 <= buf[cut] < 0xC0:
                cut += 1
        changes = [*_MODE_CHANGE.finditer(buf, 0, cut)]
        if buf.find(b"\xc2\x9b", 0, cut) >= 0:  # 8-bit CSI: rare, so rarely sorted
            changes += _MODE_CHANGE_C1.finditer(buf, 0, cut)
            changes.sort(key=lambda match: match.start())
        for match in changes:
            if match.group() == b"\x1bc":
                self._base_modes.clear()
                continue
            for mode in match.group(1).split(b";"):
                if mode.isdigit():
                    self._base_modes[int(mode)] = match.group(2) == b"h"
        del buf[:cut]

    def _preamble(self) -> bytes:
        modes = self._base_modes
        order = sorted(modes, key=lambda m: (m not in _ALT_SCREEN, m))
        parts = [
            f"\x1b[?{mode}{'h' if modes[mode] else 'l'}"
            for mode in order
            if modes[mode] or mode in _DEFAULT_ON
        ]
        return "".join(parts).encode()


def _end_of_body(after: re.Pattern[bytes], data: bytes, pos: int) -> int:
    """Where the body that starts at ``pos`` ends: at the first byte ``after`` matches, or at
    the end of ``data`` when the sequence goes on in a later chunk."""
    found = after.search(data, pos)
    return found.start() if found is not None else len(data)
