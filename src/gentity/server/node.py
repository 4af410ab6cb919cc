"""Who owns an operation in flight, and whether that owner is still alive.

An operation writes its owner on the instance row: ``<node>/<boot>``. The node id is kept in
the data directory; the boot id is new for every server process, which holds an exclusive
lock on ``<data>/boots/<boot>`` for as long as it lives. So a server can tell, on its own host
and without waiting for a lease, that an operation's owner is gone: same node, and its boot
lock is free (the process exited or was killed, and the kernel dropped the lock). A restarted
server thus settles its predecessor's interrupted operations at start-up, while a second server
running on the same data directory (its lock still held) is left alone.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
from pathlib import Path


class NodeIdentity:
    def __init__(self, data_dir: Path) -> None:
        self.node = _node_id(data_dir)
        self._boots = data_dir / "boots"
        self._boots.mkdir(mode=0o700, exist_ok=True)
        boot = secrets.token_hex(8)
        # Held (open and locked) until this process exits, however it exits.
        self._lock_fd = os.open(self._boots / boot, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        self.owner = f"{self.node}/{boot}"

    def is_gone(self, owner: str) -> bool:
        """Whether an operation owned by ``owner`` has nobody left to finish it, as far as this
        server can tell: its owner is this process (which is not running it any more: the
        caller checks) or a dead process of this node."""
        return owner == self.owner or self.is_dead(owner)

    def is_dead(self, owner: str) -> bool:
        """Whether ``owner`` is a server process of this node that is no longer running.

        Another node's owner is never declared dead here: its lease decides.
        """
        node, _, boot = owner.partition("/")
        if node != self.node or owner == self.owner or not boot.isalnum():
            return False
        path = self._boots / boot
        try:
            fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW)
        except FileNotFoundError:
            return True
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # its process still holds it
        finally:
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # nobody will lock it again
        return True

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.unlink(self._boots / self.owner.partition("/")[2])
        os.close(self._lock_fd)


def _node_id(data_dir: Path) -> str:
    path = data_dir / "node-id"
    with contextlib.suppress(FileNotFoundError):
        value = path.read_text().strip()
        if value:
            return value
    value = secrets.token_hex(8)
    # Created exclusively: two servers started at once on one data directory agree.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as fh:
        fh.write(value + "\n")
    return value
