"""Each instance's own network: a network namespace with outbound access only.

bubblewrap gives the sandbox an empty network namespace; ``slirp4netns`` then plugs a
user-mode TCP/IP stack into it (no host interfaces, bridges or iptables involved). With host
loopback disabled the instance reaches the internet (its model API, package registries) but
not the control plane, PostgreSQL or anything else listening on the host's loopback, and not
other instances, which sit behind stacks of their own.

slirp4netns parses packets the instance writes, so it runs sandboxed and seccomp-filtered by
its own options, in the instance's cgroups, and exits when the sandbox does (``--exit-fd``).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import select
import shutil
import subprocess
import threading
import time
from functools import cache
from pathlib import Path

log = logging.getLogger(__name__)

# slirp4netns's built-in DNS forwarder: works whatever the host's resolv.conf points at
# (a resolver on the host's loopback would be unreachable from the instance).
DNS_SERVER = "10.0.2.3"
MTU = 65520
READY_TIMEOUT = 10.0


class NetworkError(Exception):
    """The instance's network could not be set up; the message is safe to show."""


@cache
def slirp4netns_path() -> str | None:
    """The ``slirp4netns`` binary, or None (then instances share the host's network)."""
    path = shutil.which("slirp4netns")
    if path is None:
        log.warning(
            "slirp4netns not found: local instances SHARE THE HOST'S NETWORK and can reach "
            "services on its loopback (the control plane, databases); install the "
            "'slirp4netns' package to give each its own network"
        )
    return path


def resolv_conf(directory: Path) -> Path:
    """A resolv.conf naming the in-namespace DNS forwarder, written once per data directory."""
    path = directory / "resolv.conf"
    if not path.exists():
        directory.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".resolv.conf.{os.getpid()}.{secrets.token_hex(4)}")
        temporary.write_text(f"nameserver {DNS_SERVER}\n")
        temporary.chmod(0o644)
        os.replace(temporary, path)
    return path


def read_sandbox_pid(info_fd: int, timeout: float = READY_TIMEOUT) -> int:
    """The host pid of the sandbox's first process, from bubblewrap's ``--info-fd`` JSON."""
    deadline = time.monotonic() + timeout
    data = b""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([info_fd], [], [], remaining)[0]:
            raise NetworkError("the sandbox did not start in time")
        chunk = os.read(info_fd, 4096)
        if not chunk:
            break
        data += chunk
        try:
            return int(json.loads(data)["child-pid"])
        except (ValueError, KeyError, TypeError):
            continue  # not all of it yet
    raise NetworkError("the sandbox exited before its network was set up")


def attach(
    sandbox_pid: int, exit_fd: int, output: Path, wrap: list[str], env: dict[str, str]
) -> None:
    """Start slirp4netns on the sandbox's network namespace and wait until it is configured.

    ``exit_fd`` is the read end of a pipe whose write end only the sandbox holds: when the
    sandbox ends, slirp4netns reads end-of-file and exits. ``wrap`` prefixes the command
    (joining the instance's cgroups).
    """
    binary = slirp4netns_path()
    if binary is None:
        raise NetworkError("slirp4netns is not installed")
    ready_read, ready_write = os.pipe()
    argv = [
        *wrap,
        # In a mount namespace of its own with private propagation: its sandbox unmounts
        # what it does not need, which must not reach the host's shared mounts (the volumes).
        "unshare",
        "--mount",
        "--propagation=private",
        "--",
        binary,
        "--configure",
        f"--mtu={MTU}",
        "--disable-host-loopback",
        "--enable-sandbox",
        "--enable-seccomp",
        f"--exit-fd={exit_fd}",
        f"--ready-fd={ready_write}",
        str(sandbox_pid),
        "tap0",
    ]
    try:
        with output.open("ab") as out:
            process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                pass_fds=(exit_fd, ready_write),
                start_new_session=True,  # outlives this server, like the sandbox
            )
        # Reaped while this server runs; after a restart, init does.
        threading.Thread(target=process.wait, name="reap-slirp4netns", daemon=True).start()
        os.close(ready_write)
        ready_write = -1
        readable, _, _ = select.select([ready_read], [], [], READY_TIMEOUT)
        if not readable or os.read(ready_read, 1) != b"1":
            raise NetworkError("the instance's network did not come up")
    finally:
        os.close(ready_read)
        if ready_write >= 0:
            os.close(ready_write)
