"""The guest daemon's process between its spawn and its first answer, as the provider sees it.

A booted guest waits for its bootstrap on stdin (no secret in it: the control plane sends
the config and secrets over the guest's socket once it answers). Until then the provider
learns about it only from its process: whether it still runs, how it ended, and what it
printed to ``guest.out``, which the instance may have written to since and so is read with
care.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import signal
import socket
import stat
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from gentity.providers.compute.base import ProviderError
from gentity.providers.compute.local.sandbox import InstancePaths

log = logging.getLogger(__name__)

GUEST_READY_TIMEOUT = 20.0
GUEST_STOP_GRACE = 8.0
# What bubblewrap says when a mount of the host it is making read-only in the sandbox's copy
# of the mount tree went away meanwhile.
_MOUNT_RACE = b"Unable to apply mount flags"


class SandboxSetupRaced(ProviderError):
    """bubblewrap could not set the sandbox up because a mount of the host went away while it
    copied the host's mount tree (another instance's volume, unmounted by its stop or destroy,
    or moved as a warm spare's directory became an instance's): nothing of the instance ran,
    and setting it up again normally works."""


@dataclass
class Booted:
    """A sandbox whose guest waits for its bootstrap, and what it was handed."""

    paths: InstancePaths
    process: subprocess.Popen[bytes]
    listen_fd: int
    """The listening socket's descriptor number in the guest (bound by us at ``paths.socket``)."""
    cgroup_fd: int | None
    """The children's ``cgroup.procs`` descriptor number in the guest, if there is that group."""
    sandbox_pid: int | None = None
    """The host pid of the sandbox's first process (to set its hostname)."""
    uid: int | None = None
    spare: bool = False
    """Started ahead of need and taken over by an instance."""


def wait_for_waiting(process: subprocess.Popen[bytes], output: Path, start: int) -> None:
    """Until the guest prints that it waits for its bootstrap (its sandbox is complete by then).

    Nothing of the instance has run in this sandbox yet, so what the guest printed since
    ``start`` can be trusted this once. Raises ProviderError when it ends or hangs instead.
    """
    deadline = time.monotonic() + GUEST_READY_TIMEOUT
    while process.poll() is None and time.monotonic() < deadline:
        # Opened only once it has grown: many sandboxes booting at once each have a thread
        # here, and a size is much cheaper to look at every few milliseconds than the text.
        with contextlib.suppress(OSError):
            if os.lstat(output).st_size > start:
                with open_regular(output) as f:
                    f.seek(start)
                    if b'"waiting"' in f.read(4096):
                        return
        time.sleep(0.005)
    if process.poll() is None:
        raise ProviderError("the guest daemon did not start within 20 s")
    with contextlib.suppress(OSError), open_regular(output) as f:
        f.seek(start)
        if _MOUNT_RACE in f.read(4096):
            raise SandboxSetupRaced("the sandbox could not be set up: a host mount changed")
    raise ProviderError(f"the guest daemon {describe_exit(process)} while it started")


def end_waiting_guest(process: subprocess.Popen[bytes]) -> None:
    """A guest still waiting for its bootstrap exits at end-of-file on stdin."""
    with contextlib.suppress(OSError):
        if process.stdin:
            process.stdin.close()
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=GUEST_STOP_GRACE)


def send_bootstrap(booted: Booted, bootstrap: dict[str, object]) -> None:
    process = booted.process
    if process.stdin is None:
        raise ProviderError("the guest daemon has no bootstrap channel")
    try:
        with process.stdin:
            process.stdin.write(json.dumps(bootstrap).encode())
    except BrokenPipeError:
        # The pipe broke as the process went: give it a moment to be reaped, so the operator
        # learns how it ended (and from guest.out, what it said) rather than just that it did.
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=1)
        log_guest_output(booted.paths.root.name, booted.paths, level=logging.WARNING)
        ended = "closed its stdin" if process.poll() is None else describe_exit(process)
        raise ProviderError(f"the guest daemon {ended} before it got its bootstrap") from None


def describe_exit(process: subprocess.Popen[bytes]) -> str:
    """How a sandbox process ended, in words that carry nothing the instance wrote."""
    code = process.poll()
    if code is None:
        return "is still starting"
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-code).name}"
    return f"exited with code {code}"


def exit_words(code: int) -> str:
    """How the sandbox's first process ended, from its exit status: ``exited with code 3`` or
    ``was killed by signal KILL``. Bubblewrap reports a guest that a signal ended as 128 + the
    signal's number, as a shell does."""
    number = -code if code < 0 else code - 128 if code > 128 else 0
    with contextlib.suppress(ValueError):
        if number:
            return f"was killed by signal {signal.Signals(number).name.removeprefix('SIG')}"
    return f"exited with code {code}"


def log_guest_output(ref: str, paths: InstancePaths, level: int = logging.INFO) -> None:
    """For the operator: the end of what the guest printed. The instance may have written it,
    so it goes to the server's log escaped and cut short, and never into an API answer."""
    try:
        with open_regular(paths.guest_output) as f:
            size = os.fstat(f.fileno()).st_size
            f.seek(max(0, size - 500))
            tail = f.read(500)
    except OSError:
        return
    log.log(level, "instance %s: last guest output: %r", ref, tail)


def open_regular(path: Path) -> io.BufferedReader:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError("not a regular file")
    return os.fdopen(fd, "rb")


def bind_socket(path: Path) -> int:
    """Bind and listen on the guest's socket ourselves, in a directory the instance cannot
    reach; the guest gets the descriptor. Returns it (inheritable, for ``pass_fds``)."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(path))
        path.chmod(0o600)
        sock.listen(64)
    except OSError:
        sock.close()
        raise
    return sock.detach()
