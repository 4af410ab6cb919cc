"""Building the command that runs an instance's guest daemon inside a bubblewrap sandbox.

What the sandbox gives each instance (when ``bwrap`` works on this host):

- its own mount namespace: the host filesystem read-only, with the other instances' volumes,
  the database, the encryption key, home directories and SSH keys hidden behind empty tmpfs;
  only its own volume (at ``/home/agent``), log and socket directories are writable;
- its own PID, IPC and UTS namespaces (it sees only its own processes; hostname = subdomain);
- its own user namespace, so root inside holds no capabilities over the host;
- a clean environment: nothing of the server's (which may hold ``GENTITY_SECRET_KEY``) leaks in.

The network namespace is shared on purpose: agents must reach their model APIs.
Without ``bwrap`` the guest runs as a plain detached process and a warning is logged.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import gentity

log = logging.getLogger(__name__)

# Host paths an instance has no business reading. Hidden when they exist.
HIDDEN_PATHS = (
    "/root",
    "/home",
    "/etc/ssh",
    "/etc/shadow",
    "/etc/gshadow",
    "/var/lib/postgresql",
    "/var/lib/mysql",
    "/var/lib/redis",
    "/run",
    "/var/run",
)
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Where the host keeps its trusted certificates, when not in the default place. Agents talk
# TLS to their model APIs, so these follow them into the sandbox (paths only, no secrets).
TLS_TRUST_VARIABLES = (
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "NODE_EXTRA_CA_CERTS",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
)


# Where an instance's directories appear inside its sandbox. Fixed paths (not the host's) mean
# a sandbox can be started before it is known which instance it will serve.
SANDBOX_HOME = "/home/agent"
SANDBOX_LOGS = "/run/gentity/logs"
SANDBOX_SOCKETS = "/run/gentity/guest"


@dataclass(frozen=True)
class GuestView:
    """The instance's directories as the guest daemon and the agent see them."""

    home: str
    log_file: str
    socket: str


@dataclass(frozen=True)
class InstancePaths:
    """Where one instance lives on the host."""

    root: Path
    volume: Path
    """The agent's home and working directory; survives stop and start."""
    logs: Path
    run: Path
    """Runtime files (the guest's socket), on a short path."""

    @classmethod
    def under(cls, instances_dir: Path, instance_id: str, runtime_dir: Path) -> InstancePaths:
        root = instances_dir / instance_id
        return cls(
            root=root, volume=root / "volume", logs=root / "logs", run=runtime_dir / instance_id
        )

    @property
    def pid_file(self) -> Path:
        return self.root / "guest.pid"

    @property
    def log_file(self) -> Path:
        return self.logs / "agent.log"

    @property
    def socket(self) -> Path:
        return self.run / "guest.sock"

    def view(self, sandboxed: bool) -> GuestView:
        if sandboxed:
            return GuestView(
                SANDBOX_HOME, f"{SANDBOX_LOGS}/agent.log", f"{SANDBOX_SOCKETS}/guest.sock"
            )
        return GuestView(str(self.volume), str(self.log_file), str(self.socket))


@cache
def bwrap_path() -> str | None:
    """The ``bwrap`` binary, if present and able to create namespaces here."""
    path = shutil.which("bwrap")
    if path is None:
        log.warning(
            "bubblewrap (bwrap) not found: local instances run without namespace isolation; "
            "install the 'bubblewrap' package to isolate them"
        )
        return None
    probe = [path, "--ro-bind", "/", "/", "--unshare-pid", "--unshare-user", "--", "true"]
    result = subprocess.run(probe, capture_output=True, timeout=10, check=False)
    if result.returncode != 0:
        log.warning(
            "bwrap cannot create namespaces on this host (%s): local instances run without "
            "namespace isolation",
            result.stderr.decode(errors="replace").strip(),
        )
        return None
    return path


def guest_command() -> list[str]:
    """How to start the guest daemon with this very Python and this very Gentity.

    ``-I`` (isolated mode): no ``PYTHON*`` variable or user site-packages can change what runs.
    """
    return [sys.executable, "-I", "-m", "gentity.guest"]


def guest_environment(home: str, extra_path: list[str]) -> dict[str, str]:
    """The guest's own environment: minimal and free of the server's secrets."""
    trust = {k: os.environ[k] for k in TLS_TRUST_VARIABLES if k in os.environ}
    return {
        **trust,
        "PATH": ":".join([*extra_path, DEFAULT_PATH]),
        "HOME": home,
        "LANG": "C.UTF-8",
        "TERM": "xterm-256color",
        "SHELL": "/bin/bash",
    }


def sandbox_argv(
    *,
    bwrap: str,
    paths: InstancePaths,
    data_dir: Path,
    hostname: str,
    readonly_paths: list[Path],
    hidden_dirs: Sequence[Path] = (),
    env: dict[str, str],
    command: list[str],
) -> list[str]:
    """The ``bwrap`` command line. Later mounts land on top of earlier ones, so the order is:
    host read-only, then hide things, then bring back what this instance needs."""
    argv = [
        bwrap,
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-user",
        "--unshare-cgroup-try",
        "--hostname",
        hostname,
        "--ro-bind",
        "/",
        "/",
        "--dev",
        "/dev",
        "--proc",
        "/proc",
        "--tmpfs",
        "/tmp",  # noqa: S108 (a fresh, private tmpfs inside the sandbox)
    ]
    for hidden in HIDDEN_PATHS:
        if Path(hidden).is_symlink():
            continue  # e.g. /var/run -> /run: hiding the target hides it
        if Path(hidden).is_dir():
            argv += ["--tmpfs", hidden]
        elif Path(hidden).exists():
            argv += ["--ro-bind", "/dev/null", hidden]
    argv += ["--tmpfs", str(data_dir)]
    for directory in hidden_dirs:  # e.g. where the key file lives, outside the data directory
        if directory.is_dir():
            argv += ["--tmpfs", str(directory)]
    # The interpreter and the package may live under a hidden directory (e.g. pyenv in /root).
    for path in _python_paths() + readonly_paths:
        argv += ["--ro-bind-try", str(path), str(path)]
    for host, inside in (
        (paths.volume, SANDBOX_HOME),
        (paths.logs, SANDBOX_LOGS),
        (paths.run, SANDBOX_SOCKETS),
    ):
        argv += ["--bind", str(host), inside]
    argv += ["--chdir", SANDBOX_HOME, "--clearenv"]
    for key, value in env.items():
        argv += ["--setenv", key, value]
    return [*argv, "--", *command]


def _python_paths() -> list[Path]:
    package_parent = Path(gentity.__file__).resolve().parent.parent
    candidates = {Path(sys.base_prefix), Path(sys.prefix), package_parent}
    candidates.add(Path(sys.executable).resolve().parent.parent)
    return sorted(candidates)
