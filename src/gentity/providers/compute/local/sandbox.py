"""Building the command that runs an instance's guest daemon inside a bubblewrap sandbox.

What the sandbox gives each instance (when ``bwrap`` works on this host); docs/security.md
says why each piece is there and what its absence costs:

- its own mount namespace: the host filesystem read-only, with the other instances, the data
  directory (database, encryption key), home directories, service state and every cgroup
  hidden; only its own volume (``/home/agent``) and log directory are writable;
- its own PID, IPC, UTS and cgroup namespaces, and (with ``slirp4netns``) its own network
  namespace with outbound access only;
- an unprivileged host uid of its own: when the server runs as root, an outer bubblewrap sets
  up the mounts as root, ``setpriv`` drops to the instance's uid with an empty bounding set and
  no_new_privs, and an inner bubblewrap maps that uid to root inside a user namespace of its
  own, drops every capability and applies the seccomp filter. A server that is not root runs
  one bubblewrap that maps its own uid the same way;
- a clean environment: nothing of the server's (which may hold ``GENTITY_SECRET_KEY``) leaks in.

Without ``bwrap`` the guest runs as a plain detached process and a warning is logged.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
import subprocess
import sys
from dataclasses import dataclass, field
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
    "/var/lib",
    "/var/log",
    "/var/spool",
    "/var/cache",
    "/var/backups",
    "/var/mail",
    "/run",
    "/var/run",
    "/sys/fs/cgroup",
)
SCRATCH_DIRS = ("/tmp", "/var/tmp")  # noqa: S108 (fresh, private tmpfs inside the sandbox)
SCRATCH_BYTES = 1 << 30
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


@dataclass(frozen=True)
class GuestView:
    """The instance's directories as the guest daemon and the agent see them."""

    home: str
    log_file: str


@dataclass(frozen=True)
class InstancePaths:
    """Where one instance lives on the host.

    ``root`` is the control plane's (mode 0700, never mounted into the sandbox): the guest's
    own output, its pid, uid and cgroup records live there, out of the instance's reach.
    ``disk`` holds what the instance may write: its home and its log directory, on the
    instance's size-limited volume when the host supports one.
    """

    root: Path
    disk: Path
    volume: Path
    """The agent's home and working directory; survives stop and start."""
    logs: Path
    """Written by the guest (and so by the instance): only ever read with care."""
    run: Path
    """The guest's socket, bound by the control plane, on a short path the instance can't see."""

    @classmethod
    def under(cls, instances_dir: Path, instance_id: str, runtime_dir: Path) -> InstancePaths:
        root = instances_dir / instance_id
        disk = root / "disk"
        return cls(
            root=root,
            disk=disk,
            volume=disk / "home",
            logs=disk / "logs",
            run=runtime_dir / instance_id,
        )

    @property
    def pid_file(self) -> Path:
        return self.root / "guest.pid"

    @property
    def guest_output(self) -> Path:
        return self.root / "guest.out"

    @property
    def uid_file(self) -> Path:
        return self.root / "uid"

    @property
    def log_file(self) -> Path:
        return self.logs / "agent.log"

    @property
    def socket(self) -> Path:
        return self.run / "guest.sock"

    def view(self, sandboxed: bool) -> GuestView:
        if sandboxed:
            return GuestView(SANDBOX_HOME, f"{SANDBOX_LOGS}/agent.log")
        return GuestView(str(self.volume), str(self.log_file))


@cache
def bwrap_path() -> str | None:
    """The ``bwrap`` binary, if present and able to create namespaces here."""
    path = shutil.which("bwrap")
    if path is None:
        log.warning(
            "bubblewrap (bwrap) not found: local instances run WITHOUT isolation; "
            "install the 'bubblewrap' package to sandbox them"
        )
        return None
    probe = [path, "--ro-bind", "/", "/", "--unshare-pid", "--unshare-user", "--", "true"]
    result = subprocess.run(probe, capture_output=True, timeout=10, check=False)
    if result.returncode != 0:
        log.warning(
            "bwrap cannot create namespaces on this host (%s): local instances run WITHOUT "
            "isolation",
            result.stderr.decode(errors="replace").strip(),
        )
        return None
    return path


@cache
def setpriv_path() -> str | None:
    """``setpriv`` (util-linux), which drops a root server's sandbox to the instance's uid."""
    return shutil.which("setpriv")


def guest_command() -> list[str]:
    """How to start the guest daemon with this very Python and this very Gentity.

    ``-I`` (isolated mode): no ``PYTHON*`` variable or user site-packages can change what runs.
    """
    return [sys.executable, "-I", "-m", "gentity.guest"]


@cache
def compile_guest() -> None:
    """Import the guest once as it starts, outside any sandbox, so that the bytecode of its
    modules is written next to their sources; once per server process.

    The guest is an isolated-mode interpreter (:func:`guest_command`, which ignores ``PYTHON*``
    variables) that would write that bytecode on its first import, but runs as the instance's
    uid over a read-only view of the package: run from a source checkout (an editable
    install), every sandbox compiled the guest's modules again as it booted, about a quarter
    of its start-up's CPU time. A package installed from a wheel was compiled by its
    installer, and one this server cannot write stays as it is.
    """
    command = [sys.executable, "-I", "-c", "import gentity.guest.__main__"]
    try:
        env = {"PATH": DEFAULT_PATH}
        subprocess.run(command, capture_output=True, timeout=60, check=True, cwd="/", env=env)
    except (OSError, subprocess.SubprocessError) as exc:
        log.info("the guest's bytecode could not be written ahead: %s", exc)


def guest_environment(home: str, extra_path: list[str]) -> dict[str, str]:
    """The guest's own environment: minimal and free of the server's secrets."""
    trust = {k: os.environ[k] for k in TLS_TRUST_VARIABLES if k in os.environ}
    return {
        **trust,
        "PATH": ":".join([*extra_path, DEFAULT_PATH]),
        "HOME": home,
        "USER": "root",
        "LANG": "C.UTF-8",
        "TERM": "xterm-256color",
        "SHELL": "/bin/bash",
    }


@dataclass(frozen=True)
class SandboxSpec:
    """Everything :func:`sandbox_argv` needs to know about one sandbox."""

    paths: InstancePaths
    data_dir: Path
    hostname: str
    env: dict[str, str]
    command: list[str]
    readonly_paths: list[Path] = field(default_factory=list)
    hidden_dirs: list[Path] = field(default_factory=list)
    """Hidden besides the data directory, e.g. where a key file kept outside it lives."""
    uid: int | None = None
    """The instance's host uid, when the server is root and can switch to it."""
    seccomp_fd: int | None = None
    """A readable fd holding the compiled seccomp filter, consumed by bubblewrap."""
    info_fd: int | None = None
    """Where bubblewrap writes the sandbox's pid (the network is attached to it)."""
    own_network: bool = False
    resolv_conf: Path | None = None
    """Bound over ``/etc/resolv.conf`` when the instance has its own network."""
    writable: list[tuple[Path, str]] = field(default_factory=list)
    """More host directories bound writable, at the given path inside (an agent install's
    target directory, see install.py)."""
    keep_env: bool = False
    """Pass the spawned process's environment through instead of clearing it for ``env``: for
    settings that must not appear on a command line (an install's registry token)."""


def sandbox_argv(bwrap: str, spec: SandboxSpec) -> list[str]:
    """The command line that starts ``spec.command`` sandboxed.

    Later mounts land on top of earlier ones, so the order is: host read-only, then hide
    things, then bring back what this instance needs.
    """
    privileged = spec.uid is not None
    argv = [
        bwrap,
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-cgroup-try",
        "--hostname",
        spec.hostname,
    ]
    if spec.own_network:
        argv.append("--unshare-net")
    if spec.info_fd is not None:
        argv += ["--info-fd", str(spec.info_fd)]
    if not privileged:
        # Not root: one bubblewrap, whose user namespace maps our own uid to root inside.
        argv += _drop_everything(spec)
    argv += [
        "--ro-bind",
        "/",
        "/",
        "--dev",
        "/dev",
        "--proc",
        "/proc",
    ]
    # Scratch space of its own, writable by the agent as anyone's /tmp is (mode 1777): agents
    # keep sockets and caches there (Claude Code, opencode fail without). The host's are never
    # seen. Their pages are charged to the instance's memory cgroup; the size bounds them too.
    for scratch in SCRATCH_DIRS:
        argv += ["--perms", "1777", "--size", str(SCRATCH_BYTES), "--tmpfs", scratch]
    for hidden in HIDDEN_PATHS:
        if Path(hidden).is_symlink():
            continue  # e.g. /var/run -> /run: hiding the target hides it
        if Path(hidden).is_dir():
            argv += ["--tmpfs", hidden]
        elif Path(hidden).exists():
            argv += ["--ro-bind", "/dev/null", hidden]
    argv += ["--tmpfs", str(spec.data_dir)]
    for directory in spec.hidden_dirs:
        if directory.is_dir():
            argv += ["--tmpfs", str(directory)]
    # The interpreter and the package may live under a hidden or private directory (pyenv in
    # /root, a checkout under a 0700 directory): bring them back, reachable by the instance.
    shared = _python_paths() + spec.readonly_paths
    fresh = [Path(p) for p in _FRESH] + [spec.data_dir]
    if privileged:
        blocked = _unreachable_ancestors(shared)
        for directory in blocked:
            argv += ["--tmpfs", str(directory)]
        fresh += blocked
    for path in shared:
        argv += _open_way(path, fresh)
        argv += ["--ro-bind-try", str(path), str(path)]
    if spec.own_network and spec.resolv_conf is not None:
        argv += ["--ro-bind", str(spec.resolv_conf), "/etc/resolv.conf"]
    binds = [(spec.paths.volume, SANDBOX_HOME), (spec.paths.logs, SANDBOX_LOGS), *spec.writable]
    for host, inside in binds:
        argv += _open_way(Path(inside), fresh)
        argv += ["--bind", str(host), inside]
    argv += ["--chdir", SANDBOX_HOME]
    if not spec.keep_env:
        argv.append("--clearenv")
    for key, value in spec.env.items():
        argv += ["--setenv", key, value]
    argv.append("--")
    if privileged:
        argv += _switch_user(spec)
    return [*argv, *spec.command]


def _drop_everything(spec: SandboxSpec) -> list[str]:
    """bubblewrap options for the user namespace the instance runs in: root inside, mapped to
    an unprivileged uid outside, no capabilities, the seccomp filter (bubblewrap sets
    no_new_privs before applying it)."""
    argv = ["--unshare-user", "--uid", "0", "--gid", "0", "--cap-drop", "ALL"]
    if spec.seccomp_fd is not None:
        argv += ["--seccomp", str(spec.seccomp_fd)]
    return argv


def _switch_user(spec: SandboxSpec) -> list[str]:
    """Root server: drop to the instance's uid, then enter a user namespace of its own."""
    setpriv = setpriv_path()
    bwrap = bwrap_path()
    if setpriv is None or bwrap is None or spec.uid is None:
        raise RuntimeError("switching to an instance uid needs setpriv and bwrap")
    uid = str(spec.uid)
    return [
        setpriv,
        f"--reuid={uid}",
        f"--regid={uid}",
        "--clear-groups",
        "--bounding-set=-all",
        "--inh-caps=-all",
        "--no-new-privs",
        "--",
        bwrap,
        *_drop_everything(spec),
        # The outer sandbox's mounts, now owned by a more privileged namespace: locked, so
        # nothing inside can unmount or remount them.
        "--bind",
        "/",
        "/",
        # A /dev (and pseudo-terminals) of this user namespace's own: the outer one's devpts
        # belongs to the host's root and hands out no terminals here.
        "--dev",
        "/dev",
        "--",
    ]


def _open_way(path: Path, fresh: list[Path]) -> list[str]:
    """Directories leading to ``path`` inside a fresh tmpfs, made enterable by anyone.

    bubblewrap creates the missing parents of a mount point with mode 0700, which would keep
    the instance's uid from everything bound below them.
    """
    argv: list[str] = []
    for ancestor in reversed(path.parents):
        if any(root in ancestor.parents for root in fresh):
            argv += ["--perms", "0755", "--dir", str(ancestor)]
    return argv


def _unreachable_ancestors(paths: list[Path]) -> list[Path]:
    """The directories that keep the instance's uid from reaching ``paths`` (e.g. a 0700
    parent of a checkout). A tmpfs over each, before the binds, re-creates the way to every
    path with open directories and hides everything else there."""
    found: set[Path] = set()
    for path in paths:
        for ancestor in path.parents:
            text = str(ancestor)
            if text == "/" or any(text == h or text.startswith(h + "/") for h in _FRESH):
                continue  # a fresh tmpfs in the sandbox already, or inside one
            try:
                mode = ancestor.stat().st_mode
            except OSError:
                continue
            if not mode & stat.S_IXOTH:
                found.add(ancestor)
    # The outermost of nested ones is enough: its tmpfs covers the rest.
    return sorted(p for p in found if not any(q in p.parents for q in found))


_FRESH = (*HIDDEN_PATHS, "/tmp")  # noqa: S108 (directories that are a fresh tmpfs inside)


def _python_paths() -> list[Path]:
    package_parent = Path(gentity.__file__).resolve().parent.parent
    candidates = {Path(sys.base_prefix), Path(sys.prefix), package_parent}
    candidates.add(Path(sys.executable).resolve().parent.parent)
    return sorted(candidates)
