"""Structured agent log: JSON lines with ``timestamp``, ``level`` and ``message``.

The guest appends records with :class:`LogWriter` (fed from terminal output by
:class:`LineLogger`); readers use :func:`tail` for the last records and
:func:`follow` to stream new ones. Standard library only.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import errno
import json
import os
import re
import stat
import time
from collections.abc import AsyncGenerator, Callable, Iterable
from typing import IO, Any, Final

LEVELS: Final = ("info", "warn", "error")

#: tail() reads the file backwards in blocks of this size.
TAIL_BLOCK: Final = 64 * 1024
#: Lines longer than this are never records the guest wrote; skip them instead of
#: buffering them (protects tail/follow against a corrupt or foreign file).
MAX_LINE: Final = 1024 * 1024
#: follow() reads at most this much per step before giving the event loop a turn.
FOLLOW_CHUNK: Final = 256 * 1024

Record = dict[str, Any]

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


def format_timestamp(when: float | None = None) -> str:
    """Format a Unix time as ``2026-11-28T10:15:02.123Z`` (UTC, milliseconds)."""
    if when is None:
        when = time.time()
    millis = int(when * 1000)
    seconds, ms = divmod(millis, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{ms:03d}Z"


def parse_record(line: bytes) -> Record | None:
    """Parse one log line; None unless it is a JSON object with string
    ``timestamp``, ``level`` and ``message`` fields."""
    line = line.strip()
    if not line.startswith(b"{"):
        return None
    try:
        record = json.loads(line)
    except ValueError:
        return None
    if not isinstance(record, dict):
        return None
    for key in ("timestamp", "level", "message"):
        if not isinstance(record.get(key), str):
            return None
    return record


class LogWriter:
    """Appends JSON-line records to a file (O_APPEND, mode 0600, parents created).

    Each record is written with a single ``write`` call so concurrent appenders
    never interleave within a line. There is no fsync: the log is diagnostic, and
    an fsync per line would make a chatty agent expensive. Every message passes
    through ``redact`` first, so no record holds a secret the writer was handed.
    """

    def __init__(self, path: str | os.PathLike[str], *, redact: Redactor | None = None) -> None:
        self.path = os.fspath(path)
        self._redact = redact or Redactor()
        parent = os.path.dirname(self.path)
        if parent:
            os.makedirs(parent, exist_ok=True)
        self._fd: int | None = _open_regular(
            self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, writing=True
        )

    def write(self, level: str, message: str) -> None:
        """Append one record. Write errors (e.g. disk full) are swallowed: losing a
        log line must never take the agent down."""
        self.write_lines(level, [message])

    def write_lines(self, level: str, messages: list[str]) -> None:
        """Append one record per message, stamped alike, in a single ``write``.

        This is the hot path for a chatty agent: one timestamp, one string join and one
        system call per chunk of terminal output, instead of per line.
        """
        if self._fd is None or not messages:
            return
        if self._redact:
            messages = [self._redact(m) for m in messages]
        head = f'{{"timestamp": "{format_timestamp()}", "level": {json.dumps(level)}, "message": '
        if _JSON_UNSAFE.search("".join(messages)):
            text = "".join(f"{head}{json.dumps(m, ensure_ascii=False)}}}\n" for m in messages)
        else:  # nothing to escape: the string goes in as it is
            text = "".join(f'{head}"{m}"}}\n' for m in messages)
        data = text.encode("utf-8", "replace")
        with contextlib.suppress(OSError):
            while data:  # a regular file takes it all at once; be correct anyway
                data = data[os.write(self._fd, data) :]

    def chown(self, uid: int) -> None:
        """Hand the file to ``uid`` (the instance's), through the open descriptor."""
        if self._fd is not None:
            os.fchown(self._fd, uid, uid)

    def close(self) -> None:
        """Close the file; later writes are ignored."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> LogWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _open_existing(path: str | os.PathLike[str]) -> IO[bytes] | None:
    # With O_NONBLOCK and no symlinks followed, the open cannot block; kept out of the async
    # function so the lint rule against blocking calls stays meaningful there. Anything but
    # a regular file is treated as no log at all.
    try:
        return _open_nofollow(path)
    except (FileNotFoundError, NotARegularFile):
        return None


class NotARegularFile(OSError):
    """Something other than a plain file sits where the log should be."""


def _open_regular(path: str | os.PathLike[str], flags: int, *, writing: bool = False) -> int:
    """Open a file that the instance may have replaced, safely for a more privileged process.

    The log directory is writable from inside the instance. ``O_NOFOLLOW`` refuses a planted
    symlink; ``O_NONBLOCK`` keeps a FIFO from blocking the open; the file must then be a
    regular file, and for writing one with a single link (a hard link to a file elsewhere
    would otherwise be appended to).
    """
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENXIO):  # a symlink; a FIFO without a reader
            raise NotARegularFile(f"{os.fspath(path)} is not a regular file") from None
        raise
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or (writing and st.st_nlink != 1):
        os.close(fd)
        raise NotARegularFile(f"{os.fspath(path)} is not a regular file")
    return fd


def _directory_gone(path: str | os.PathLike[str]) -> bool:
    # A stat of a local directory; kept out of the async function like the opens above.
    return not os.path.isdir(os.path.dirname(os.fspath(path)) or ".")


def _open_nofollow(path: str | os.PathLike[str]) -> IO[bytes]:
    return os.fdopen(_open_regular(path, os.O_RDONLY), "rb")


def tail(path: str | os.PathLike[str], n: int) -> list[Record]:
    """Return the last ``n`` valid records of the log, oldest first.

    Reads backwards from the end in fixed-size blocks and stops as soon as ``n``
    records are found, so the cost depends on ``n``, not on the file size. Lines
    that are not valid records are skipped; a missing file gives ``[]``. A last
    line without a trailing newline is included if it is a complete record.
    """
    if n <= 0:
        return []
    try:
        f = _open_nofollow(path)
    except (FileNotFoundError, NotARegularFile):
        return []
    newest_first: list[Record] = []
    with f:
        pos = f.seek(0, os.SEEK_END)
        carry = b""  # start of a line whose beginning lies in an earlier block
        skipping = False  # inside an over-long line: discard until its start
        while pos > 0 and len(newest_first) < n:
            size = min(TAIL_BLOCK, pos)
            pos -= size
            f.seek(pos)
            block = f.read(size)
            if skipping:
                newline = block.rfind(b"\n")
                if newline < 0:
                    continue
                block, skipping = block[: newline + 1], False
            lines = (block + carry).split(b"\n")
            carry = lines[0]
            for line in reversed(lines[1:]):
                record = parse_record(line)
                if record is not None:
                    newest_first.append(record)
                    if len(newest_first) == n:
                        break
            if len(carry) > MAX_LINE:
                carry, skipping = b"", True
        if len(newest_first) < n and carry:
            record = parse_record(carry)
            if record is not None:
                newest_first.append(record)
    newest_first.reverse()
    return newest_first


async def follow(
    path: str | os.PathLike[str], *, poll_interval: float = 0.25
) -> AsyncGenerator[Record, None]:
    """Yield records appended to the log after the call, forever (see :func:`follow_offsets`)."""
    stream = follow_offsets(path, poll_interval=poll_interval)
    try:
        async for _offset, record in stream:
            yield record
    finally:
        await stream.aclose()


async def follow_offsets(
    path: str | os.PathLike[str], *, start: int | None = None, poll_interval: float = 0.25
) -> AsyncGenerator[tuple[int, Record], None]:
    """Yield ``(offset after the line, record)`` for records appended to the log, forever.

    ``start`` resumes right after a line whose offset a previous follow yielded; without it,
    following starts at the current end of the file (or waits for it to exist). Yields a
    line only once its newline has arrived, and starts over from the beginning
    when the file is truncated or replaced (different inode), and ends when the file's
    directory is gone. Polls with ``asyncio.sleep`` when idle. The file is closed when the
    consumer stops
    (``break``, ``aclose()`` or cancellation).
    """
    f: IO[bytes] | None = None
    ident: tuple[int, int] | None = None
    pos = 0
    pending = b""
    try:
        f = _open_existing(path)
        if f is not None:
            st = os.fstat(f.fileno())
            end = st.st_size
            resume = start if start is not None and 0 <= start <= end else end
            ident, pos = (st.st_dev, st.st_ino), f.seek(resume)
        while True:
            if f is None:
                # The file appeared after the call (or was replaced): all of it is new.
                f = _open_existing(path)
                if f is None:
                    await asyncio.sleep(poll_interval)
                    continue
                st = os.fstat(f.fileno())
                ident, pos, pending = (st.st_dev, st.st_ino), 0, b""
            # Reads happen in a thread, and only once fstat (which never blocks) shows data.
            chunk = b""
            if os.fstat(f.fileno()).st_size > pos:
                chunk = await asyncio.to_thread(f.read, FOLLOW_CHUNK)
            if chunk:
                line_start = pos - len(pending)
                pos += len(chunk)
                *lines, pending = (pending + chunk).split(b"\n")
                if len(pending) > MAX_LINE:
                    pending = b""
                for line in lines:
                    line_start += len(line) + 1
                    record = parse_record(line)
                    if record is not None:
                        yield line_start, record
                # Let other tasks run even while the file keeps growing.
                await asyncio.sleep(0)
                continue
            # At the end: was the file replaced or truncated meanwhile? (A removed
            # file is waited for: its successor will have a different inode.)
            if _directory_gone(path):
                return  # the instance was destroyed: there is nothing more to follow
            with contextlib.suppress(FileNotFoundError):
                st = os.lstat(path)  # the name, not where a planted symlink points
                if (st.st_dev, st.st_ino) != ident:
                    f.close()
                    f = None
                    continue
                if st.st_size < pos:
                    f.seek(0)
                    pos, pending = 0, b""
                    continue
            await asyncio.sleep(poll_interval)
    finally:
        if f is not None:
            f.close()


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
# Characters a JSON string cannot hold as they are.
_JSON_UNSAFE = re.compile(r'["\\\x00-\x1f]')


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
            for line in strip_terminal(complete).split("\n"):
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


def offset_before_last(path: str | os.PathLike[str], n: int) -> int:
    """The byte offset where the last ``n`` lines of the file begin (0 if it has fewer).

    Following from this offset (:func:`follow_offsets` ``start=``) replays those lines first.
    Like :func:`tail`, it reads backwards and never the whole file.
    """
    try:
        f = _open_nofollow(path)
    except (FileNotFoundError, NotARegularFile):
        return 0
    with f:
        end = f.seek(0, os.SEEK_END)
        pos, newlines = end, 0
        # A final newline ends the last line; it does not start another one.
        if end and (f.seek(end - 1), f.read(1))[1] == b"\n":
            pos -= 1
        while pos > 0:
            size = min(TAIL_BLOCK, pos)
            f.seek(pos - size)
            block = f.read(size)
            index = len(block)
            while (index := block.rfind(b"\n", 0, index)) >= 0:
                newlines += 1
                if newlines == n:
                    return pos - size + index + 1
            pos -= size
    return 0
