"""An instance's agent log on this host: made ready for the guest, and read while the
instance is stopped (while it runs, the control plane reads it through the guest).

The log lives on the instance's volume and is written by the guest (and so by the
instance): it is opened without following links and parsed as hostile input.
"""

from __future__ import annotations

import logging
from pathlib import Path

import anyio.to_thread

from gentity.guest.logformat import NotARegularFile
from gentity.guest.logreader import tail
from gentity.guest.logwriter import LogWriter
from gentity.providers.compute.local.sandbox import InstancePaths

log = logging.getLogger(__name__)


def give_log_file(paths: InstancePaths, owner: int) -> None:
    """Make sure the log is a regular file the guest can append to, before anything (the
    agent's install) writes to it. Whatever the instance planted in its place (a link, a
    FIFO) is removed: unlinking a name never follows it."""
    try:
        writer = LogWriter(paths.log_file)
    except NotARegularFile:
        log.warning("instance %s: its log was not a regular file; replaced", paths.root.name)
        paths.log_file.unlink()
        writer = LogWriter(paths.log_file)
    with writer:
        writer.chown(owner)


async def last_records(log_file: Path, lines: int) -> list[dict[str, str]]:
    """The last ``lines`` records, oldest first."""
    records = await anyio.to_thread.run_sync(tail, log_file, lines)
    return [dict(r) for r in records]
