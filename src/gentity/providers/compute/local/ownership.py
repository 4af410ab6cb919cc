"""Which server a local instance belongs to.

A local instance is processes and files on one host, under one data directory: only a server
there can see, stop or reach it. Its handle records the owner that created it. A replica
elsewhere that shares the database answers for such an instance with a message instead of
acting on it, and its reconciler leaves it alone: looking for its processes, it would find none
and declare a healthy instance dead.

The owner is a random id kept in the data directory rather than ``/etc/machine-id``: a server
reaches the instances of its own data directory only, so two servers on one host with data
directories of their own cannot reach each other's instances either; and containers made from
one image often share a machine-id. ``GENTITY_LOCAL_HOST_ID`` sets it instead.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Host:
    """This server as the owner of local instances."""

    id: str
    name: str
    """The host's name, for messages only (two data directories on one host share it)."""

    @classmethod
    def of(cls, data_dir: Path, configured: str | None = None) -> Host:
        return cls(configured or _stored_id(data_dir), socket.gethostname())

    def record(self) -> dict[str, str]:
        """What a new instance's handle keeps about its owner."""
        return {"host": self.id, "hostName": self.name}

    def unreachable(self, instance_id: str, data: Mapping[str, Any]) -> str | None:
        """None when the instance is this server's; else a message for the user.

        An instance whose handle names no owner was made before owners were recorded, when a
        server could only ever act on its own: it is this server's."""
        owner = data.get("host")
        if owner is None or owner == self.id:
            return None
        where = f"{data.get('hostName') or 'another host'} ({str(owner)[:16]})"
        return (
            f"instance {instance_id} runs on {where}; this server is {self.name} "
            f"({self.id[:16]}) and cannot reach it: use the server on its host"
        )


def _stored_id(data_dir: Path) -> str:
    path = data_dir / "host-id"
    with contextlib.suppress(FileNotFoundError):
        value = path.read_text().strip()
        if value:
            return value
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    # Written aside, then linked into place: two servers starting at once on one data
    # directory agree on the first one linked, and nobody ever reads a half-written file.
    draft = data_dir / f".host-id-{secrets.token_hex(4)}"
    draft.write_text(secrets.token_hex(16) + "\n")
    try:
        os.link(draft, path)
    except FileExistsError:
        pass
    finally:
        draft.unlink()
    return path.read_text().strip()
