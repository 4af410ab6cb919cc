"""This server's node id: who owns an operation in flight.

It is kept in the data directory, so a server that restarts (after a crash, ``kill -9``, a
deploy) knows which interrupted operations were its own and settles them at start-up, instead
of waiting for their lease to run out as it must for another replica's. Two servers must not
share a data directory (the local provider's instances live there too).
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path


def node_id(data_dir: Path) -> str:
    path = data_dir / "node-id"
    with contextlib.suppress(FileNotFoundError):
        value = path.read_text().strip()
        if value:
            return value
    value = f"node-{secrets.token_hex(8)}"
    # Created exclusively: two servers started at once on one data directory agree.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as fh:
        fh.write(value + "\n")
    return value
