"""What a fake machine's process sees: the bubblewrap command line that builds its filesystem.

A real machine boots its own root filesystem from an image. The fake cannot pull images, so a
machine sees the host's filesystem read-only instead, with the parts Fly would give it of its
own: a fresh ``/tmp`` and ``/run``, its volumes at their ``mounts[].path`` and its
``config.files`` at their ``guest_path``. Nothing it writes reaches the host outside its volumes.

Host directories are bound one entry at a time rather than ``/`` as a whole, so that a guest
path inside an existing directory (``/etc/app.conf``) can be placed: the directories on the way
to it become writable copies (a tmpfs in the sandbox) whose other entries are bound read-only.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

# Given fresh by bubblewrap rather than bound from the host.
OWN_MOUNTS = {"/proc": "--proc", "/dev": "--dev", "/tmp": "--tmpfs", "/run": "--tmpfs"}  # noqa: S108


@dataclass(frozen=True)
class Placement:
    """A host path bound at ``guest_path`` inside the machine (a volume or a file)."""

    host_path: Path
    guest_path: str


def canonical_guest_path(path: str) -> str:
    """``path`` with the host's symlinked directories on its way resolved (``/bin`` is
    ``/usr/bin``), since inside the sandbox those links point where they point on the host."""
    guest = os.path.normpath(path)
    if not guest.startswith("/") or guest == "/":
        raise ValueError(f"guest path must be absolute and not '/': {path!r}")
    parent, name = os.path.split(guest)
    return os.path.join(os.path.realpath(parent), name)


def _on_the_way(directory: str, targets: Iterable[str]) -> set[str]:
    """The entries of ``directory`` that are targets or lie above one."""
    prefix = directory.rstrip("/") + "/"
    names = set()
    for target in targets:
        if target.startswith(prefix):
            names.add(target[len(prefix) :].split("/", 1)[0])
    return names


def _mirror(directory: str, targets: list[str], args: list[str]) -> None:
    """Bind ``directory``'s host entries into the sandbox, leaving room for ``targets``."""
    wanted = _on_the_way(directory, targets)
    try:
        entries = sorted(os.listdir(directory))
    except OSError:
        return  # a directory only the machine has (created by bubblewrap for a mount)
    for name in entries:
        path = os.path.join(directory, name)
        if path in OWN_MOUNTS or path in targets:
            continue
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif name in wanted and os.path.isdir(path):
            # A writable copy of this directory level, so a target can be created inside it.
            args += ["--dir", path]
            _mirror(path, targets, args)
        elif name not in wanted:
            args += ["--ro-bind", path, path]


def filesystem_args(placements: list[Placement]) -> list[str]:
    """bubblewrap options for the machine's filesystem: host read-only, placements writable."""
    targets = [p.guest_path for p in placements]
    args: list[str] = []
    _mirror("/", targets, args)
    for path, option in OWN_MOUNTS.items():
        args += [option, path]
    for placement in placements:
        args += ["--bind", str(placement.host_path), placement.guest_path]
    return args


def bubblewrap_argv(
    hostname: str, placements: list[Placement], info_fd: int, block_fd: int, command: list[str]
) -> list[str]:
    """The whole bubblewrap command for one machine.

    Own PID namespace (stopping the machine kills everything in it), own network namespace
    (slirp4netns plugs into it), every capability dropped although the fake runs as root, and
    ``--die-with-parent`` so that a fake that dies takes its machines with it.
    """
    return [
        "bwrap",
        "--die-with-parent",
        "--new-session",
        "--unshare-pid",
        "--unshare-net",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-cgroup-try",
        "--hostname",
        hostname,
        "--cap-drop",
        "ALL",
        *filesystem_args(placements),
        "--chdir",
        "/",
        "--info-fd",
        str(info_fd),
        "--block-fd",
        str(block_fd),
        "--",
        *command,
    ]
