"""The structured log's format, JSON lines with ``timestamp``, ``level`` and ``message``, and
the safe open both its writer and its readers use. Standard library only.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import time
from typing import Any

Record = dict[str, Any]


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


class NotARegularFile(OSError):
    """Something other than a plain file sits where the log should be."""


def open_regular(path: str | os.PathLike[str], flags: int, *, writing: bool = False) -> int:
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
