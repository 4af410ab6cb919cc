"""Appending records to the structured log (see :mod:`gentity.guest.logformat`).

Standard library only.
"""

from __future__ import annotations

import contextlib
import json
import os
import re

from gentity.guest.logformat import format_timestamp, open_regular
from gentity.guest.redact import Redactor

# Characters a JSON string cannot hold as they are.
_JSON_UNSAFE = re.compile(r'["\\\x00-\x1f]')


class LogWriter:
    """Appends JSON-line records to a file (O_APPEND, mode 0600, parents created).

    Each record is written with a single ``write`` call so concurrent appenders
    never interleave within a line. There is no fsync: the log is diagnostic, and
    an fsync per line would make a chatty agent expensive. Every message passes
    through ``redact`` first, so no record holds a secret the writer was handed. With
    ``echo`` every record also goes to stdout (a cloud machine's console, kept by its provider).
    """

    def __init__(
        self, path: str | os.PathLike[str], *, redact: Redactor | None = None, echo: bool = False
    ) -> None:
        self.path = os.fspath(path)
        self.redact = redact or Redactor()
        self._echo = echo
        parent = os.path.dirname(self.path)
        if parent:
            os.makedirs(parent, exist_ok=True)
        self._fd: int | None = open_regular(
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
        if self.redact.occurs_in("\n".join(messages)):
            messages = [self.redact(m) for m in messages]
        head = f'{{"timestamp": "{format_timestamp()}", "level": {json.dumps(level)}, "message": '
        if _JSON_UNSAFE.search("".join(messages)):
            text = "".join(f"{head}{json.dumps(m, ensure_ascii=False)}}}\n" for m in messages)
        else:  # nothing to escape: the strings go in as they are, joined in one call
            text = head + '"' + ('"}\n' + head + '"').join(messages) + '"}\n'
        data = text.encode("utf-8", "replace")
        for fd in (self._fd, 1) if self._echo else (self._fd,):
            _write_all(fd, data)

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


def _write_all(fd: int, data: bytes) -> None:
    with contextlib.suppress(OSError):
        while data:  # a regular file takes it all at once; be correct anyway
            data = data[os.write(fd, data) :]
