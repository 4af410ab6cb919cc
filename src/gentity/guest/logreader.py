"""Reading the structured log: :func:`tail` for the last records, :func:`follow_offsets` to
stream new ones (the guest's ``logs`` and ``follow`` ops; a stopped local instance's tail).
It may be read by a more privileged process than the one that writes it, so every open
refuses anything but a regular file. Standard library only.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncGenerator
from typing import IO, Final

from gentity.guest.logformat import NotARegularFile, Record, open_regular, parse_record

#: tail() reads the file backwards in blocks of this size.
TAIL_BLOCK: Final = 64 * 1024
#: Lines longer than this are never records the guest wrote; skip them instead of
#: buffering them (protects tail/follow against a corrupt or foreign file).
MAX_LINE: Final = 1024 * 1024
#: follow() reads at most this much per step before giving the event loop a turn.
FOLLOW_CHUNK: Final = 256 * 1024


def _open_existing(path: str | os.PathLike[str]) -> IO[bytes] | None:
    # With O_NONBLOCK and no symlinks followed, the open cannot block; kept out of the async
    # function so the lint rule against blocking calls stays meaningful there. Anything but
    # a regular file is treated as no log at all.
    try:
        return _open_nofollow(path)
    except (FileNotFoundError, NotARegularFile):
        return None


def _directory_gone(path: str | os.PathLike[str]) -> bool:
    # A stat of a local directory; kept out of the async function like the opens above.
    return not os.path.isdir(os.path.dirname(os.fspath(path)) or ".")


def _open_nofollow(path: str | os.PathLike[str]) -> IO[bytes]:
    return os.fdopen(open_regular(path, os.O_RDONLY), "rb")


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
    with f:
        return _tail(f, f.seek(0, os.SEEK_END), n)


def tail_with_cursor(path: str | os.PathLike[str], n: int) -> tuple[list[Record], int]:
    """The last ``n`` records (as :func:`tail`) and the offset right after the last one.

    Only whole lines count (a line still being appended is left for later), so following
    from the offset (:func:`follow_offsets` ``start=``) yields exactly the records after
    these: none twice, none missed. A missing file gives ``([], 0)``.
    """
    try:
        f = _open_nofollow(path)
    except (FileNotFoundError, NotARegularFile):
        return [], 0
    with f:
        end = _end_of_last_line(f, f.seek(0, os.SEEK_END))
        return (_tail(f, end, n) if n > 0 else []), end


def _end_of_last_line(f: IO[bytes], size: int) -> int:
    pos = size
    while pos > 0:
        start = max(0, pos - TAIL_BLOCK)
        f.seek(start)
        newline = f.read(pos - start).rfind(b"\n")
        if newline >= 0:
            return start + newline + 1
        pos = start
    return 0


def _tail(f: IO[bytes], end: int, n: int) -> list[Record]:
    """The last ``n`` records of what lies before offset ``end``, oldest first."""
    newest_first: list[Record] = []
    pos = end
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
            # Only the guest follows, its own log on its own disk: a read of a regular file
            # that fstat shows has data returns at once (and the guest starts no threads).
            chunk = b""
            if os.fstat(f.fileno()).st_size > pos:
                chunk = f.read(FOLLOW_CHUNK)
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
