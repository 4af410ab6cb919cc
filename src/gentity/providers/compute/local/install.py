"""Installing an agent's CLI into the shared cache, once, with progress in the instance's log.

The cache (``<data dir>/agents/<agent>-<version>``) is shared by every instance of that agent
at that version (see :meth:`InstallStep.cache_name`) and mounted read-only into their
sandboxes, so one instance cannot tamper with another's binaries. The install runs in the
control plane, before the guest starts, with the same install-once-under-a-lock as the
guest's (:mod:`gentity.guest.install`): concurrent first starts of the same agent wait for
one install.

The installers run package scripts (npm's install scripts, a source build of a PyPI
package), so they run sandboxed like an instance (see :mod:`.sandbox`): the host read-only,
the data directory, key, homes and other volumes hidden, a private ``/tmp``, an unprivileged
uid of the local range (a root server), no capabilities, no_new_privs, the seccomp filter, and
a network of their own that reaches the registries but not the host's loopback. Only a fresh
staging directory is writable, bound at the cache's path (a virtualenv records its own
path); once every command succeeded, the tree is made root's and read-only and renamed into
place. Without bubblewrap the install runs on the host, unsandboxed, with a warning, as
instances do. This module is also the small program (``python -m``) that starts the sandbox
and plugs its network in, run in the install's place.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import secrets
import shutil
import signal
import stat
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import anyio

from gentity import models
from gentity.catalog import InstallStep
from gentity.guest.config import InstallPlan
from gentity.guest.install import install_once
from gentity.guest.logwriter import LogWriter
from gentity.providers.compute.base import ProviderError
from gentity.providers.compute.local import network, uids
from gentity.providers.compute.local.sandbox import (
    DEFAULT_PATH,
    SANDBOX_HOME,
    TLS_TRUST_VARIABLES,
    InstancePaths,
    SandboxSpec,
    bwrap_path,
    sandbox_argv,
    setpriv_path,
)

server_log = logging.getLogger(__name__)  # the instance's log is ``log`` in functions

INSTALL_TIMEOUT_SECONDS = models.INSTALL_TIMEOUT_SECONDS
# The operator's settings for npm and pip (a registry mirror, a proxy, a private CA) apply to
# the install, which runs as the server's user like any package install would.
_PASSTHROUGH_PREFIXES = (
    "npm_config_",
    "NPM_CONFIG_",
    "PIP_",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    *TLS_TRUST_VARIABLES,
)


class AgentInstallError(ProviderError):
    """The agent's CLI could not be installed; the message says why."""


def cache_dir(agents_dir: Path, agent_id: str, step: InstallStep) -> Path:
    return agents_dir / step.cache_name(agent_id)


def bin_dir(agents_dir: Path, agent_id: str, step: InstallStep) -> Path:
    return cache_dir(agents_dir, agent_id, step) / "bin"


@dataclass(frozen=True)
class InstallSandbox:
    """What an install's sandbox hides and who it runs as: the provider's settings."""

    data_dir: Path
    key_dir: Path | None = None
    """The directory of a key file kept outside the data directory: hidden like it."""
    uid_range: tuple[int, int] | None = None
    """Where a root server takes the install's unprivileged uid from (None: not root)."""


async def ensure_installed(
    agents_dir: Path,
    agent_id: str,
    step: InstallStep,
    log: LogWriter,
    sandbox: InstallSandbox | None = None,
) -> None:
    """Install the agent's CLI unless a previous install finished; AgentInstallError if not.

    With ``sandbox`` (and bubblewrap), the installers run sandboxed (see the module's
    docstring); without, on the host as the server's user. The failure's cause (see
    :func:`gentity.guest.install.install_once`) is also written to the instance's log at ERROR."""
    target = cache_dir(agents_dir, agent_id, step)
    plan = InstallPlan(
        lock_file=str(agents_dir / f"{step.cache_name(agent_id)}.lock"),
        marker=str(target / ".installed"),
        commands=step.commands(str(target), sys.executable),
        env={},
    )
    bwrap = bwrap_path() if sandbox is not None else None
    if sandbox is not None and bwrap is None:
        log.write("warning", "install: bubblewrap is missing: installing WITHOUT a sandbox")
    staged: _Staging | None = None
    try:
        if sandbox is not None and bwrap is not None:
            staged = _Staging(sandbox, target, step)
        env = _environment(target) if staged is None else staged.environment()
        with anyio.fail_after(INSTALL_TIMEOUT_SECONDS):
            error = await install_once(
                plan,
                cwd=str(agents_dir),
                env=env,
                log=log,
                wait_exit=_wait,
                wrap=None if staged is None else staged.wrap,
                publish=None if staged is None else staged.publish,
            )
    except TimeoutError:
        error = f"not done after {INSTALL_TIMEOUT_SECONDS // 60} minutes"
    except uids.UidRangeExhausted as exc:
        error = f"the install's sandbox could not be set up: {exc}"
    except OSError as exc:  # its text would name host paths, which the API must not show
        server_log.warning("agent %s: the install's sandbox could not be set up: %s", agent_id, exc)
        error = f"the install's sandbox could not be set up: {(exc.strerror or 'error').lower()}"
    finally:
        if staged is not None:
            await anyio.to_thread.run_sync(staged.discard)
    if error is not None:
        # Redacted like the log's every record: the message becomes the instance's
        # errorMessage, which the API shows.
        message = log.redact(f"install failed: {error}")
        log.write("error", message)
        raise AgentInstallError(message)


def _environment(target: Path) -> dict[str, str]:
    """The installers' environment: a plain PATH and the operator's npm/pip settings, and
    nothing else of the server's (its own secrets among them)."""
    env = {
        "PATH": DEFAULT_PATH,
        "HOME": os.environ.get("HOME", str(target.parent)),  # for the user's ~/.npmrc
        "npm_config_cache": str(target.parent / ".npm-cache"),
        "LANG": "C.UTF-8",
    }
    env.update(_operator_settings())
    return env


def _operator_settings() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k.startswith(_PASSTHROUGH_PREFIXES)}


def _wait(process: subprocess.Popen[bytes]) -> asyncio.Future[int]:
    # A thread blocked in wait(): the server must not take over SIGCHLD as the guest does.
    return asyncio.get_running_loop().run_in_executor(None, process.wait)


# --- the sandbox ----------------------------------------------------------------------------


@dataclass
class _Staging:
    """One install attempt's directories, next to the cache (so the rename is atomic)::

        .install-<name>-<random>/   0700, the control plane's
            target/                 the install's result, bound at the cache's path
            home/                   HOME inside (npm's and pip's caches), thrown away
            logs/                   unused, empty
            network.out             what slirp4netns printed

    Made by the first command's :meth:`wrap`, under the install's lock (an instance waiting
    for another's install makes none), which is also when an attempt a crash left behind is
    removed.
    """

    sandbox: InstallSandbox
    target: Path
    step: InstallStep
    work: Path | None = None
    uid: int | None = None
    readonly: list[Path] = field(default_factory=list)

    def _prepare(self) -> Path:
        if self.work is not None:
            return self.work
        parent, prefix = self.target.parent, f".install-{self.target.name}-"
        for stale in parent.glob(f"{prefix}*"):
            if re.fullmatch(r"[0-9a-f]{8}", stale.name.removeprefix(prefix)):
                _remove(stale)  # the lock is ours: no install of this agent runs
        work = parent / f"{prefix}{secrets.token_hex(4)}"
        work.mkdir(mode=0o700)
        self.work = work
        if self.sandbox.uid_range is not None and os.geteuid() == 0 and setpriv_path():
            self.uid = uids.claim(work, self.sandbox.uid_range)
        for name in ("target", "home", "logs"):
            (work / name).mkdir(mode=0o755)
            if self.uid is not None:
                os.chown(work / name, self.uid, self.uid)
        self.readonly = [p for p in _visible_host_paths(self.step) if p.exists()]
        return work

    def environment(self) -> dict[str, str]:
        """As :func:`_environment`, with HOME (and so npm's and pip's caches) in the
        sandbox's throwaway home; the operator's ``~/.npmrc`` is not there to read."""
        return {"PATH": DEFAULT_PATH, "HOME": SANDBOX_HOME, "LANG": "C.UTF-8"} | (
            _operator_settings()
        )

    def wrap(self, argv: list[str]) -> list[str]:
        """The command line that runs ``argv`` in this install's sandbox (see :func:`main`)."""
        work = self._prepare()
        spec = {
            "dataDir": str(self.sandbox.data_dir),
            "keyDir": None if self.sandbox.key_dir is None else str(self.sandbox.key_dir),
            "uid": self.uid,
            "work": str(work),
            "target": str(self.target),
            "readonly": [str(p) for p in self.readonly],
        }
        module = __name__
        return [sys.executable, "-I", "-m", module, json.dumps(spec), "--", *argv]

    def publish(self) -> str | None:
        """Make the installed tree root's and read-only, and rename it into place."""
        if self.work is None:
            return "nothing was installed"
        staged = self.work / "target"
        try:
            marker = staged / ".installed"
            marker.write_text(_timestamp() + "\n")
            if self.uid is not None:
                os.chown(marker, self.uid, self.uid)  # like the rest, until sealed
            problem = _seal(staged, self.uid)
            if problem is not None:
                return problem
            if self.target.exists() or self.target.is_symlink():
                _remove(self.target)  # a failed install from before installs were staged
            os.rename(staged, self.target)
        except OSError as exc:
            server_log.warning("%s: could not be put in place: %s", self.target, exc)
            return "the installed files could not be put in place"
        return None

    def discard(self) -> None:
        if self.work is None:
            return
        _remove(self.work)
        with contextlib.suppress(OSError):
            self.target.rmdir()  # made empty by the lock's set-up, when nothing was installed
        if self.uid is not None and self.sandbox.uid_range is not None:
            uids.release(self.uid, self.work)


def _timestamp() -> str:
    from gentity.guest.logformat import format_timestamp

    return format_timestamp()


_PATH_SETTINGS = ("PIP_FIND_LINKS", "PIP_CERT", "npm_config_cafile", "NPM_CONFIG_CAFILE")


def _visible_host_paths(step: InstallStep) -> list[Path]:
    """What the sandbox must see of the host beyond its system directories, read-only: a
    local package file named by the catalog, and files the operator's settings name (a
    private CA, a directory of wheels), which may lie in a hidden directory."""
    found: list[Path] = []
    if step.npm and Path(step.npm).is_absolute():
        found.append(Path(step.npm))
    for name in (*TLS_TRUST_VARIABLES, *_PATH_SETTINGS):
        for value in os.environ.get(name, "").split():
            path = value.removeprefix("file://")
            if path.startswith("/"):
                found.append(Path(path))
    return found


def _seal(top: Path, uid: int | None) -> str | None:
    """Every file of ``top`` root's (when the install ran as ``uid``), without write, setuid
    or setgid bits; links are left as links. The sandbox has ended: nothing changes it now.
    Anything not the install's own fails it (another owner: a hard link to someone else's
    file, which the staging directory being a mount of its own already refuses with EXDEV).
    Everything is checked before anything is sealed: a file the install linked under two
    names (Claude Code's postinstall does) is its own under both."""
    owner = os.getuid() if uid is None else uid
    entries = [top]
    for directory, dirnames, filenames in os.walk(top):
        entries += [Path(directory, name) for name in dirnames + filenames]
    found = [(path, path.lstat()) for path in entries]
    for path, info in found:
        # The names are the install's: in the server's log, escaped, never in an answer.
        if info.st_uid != owner:
            server_log.warning("install %s: a file it does not own: %r", top, str(path))
            return "the install left a file it does not own"
        kind = info.st_mode
        if not (stat.S_ISLNK(kind) or stat.S_ISREG(kind) or stat.S_ISDIR(kind)):
            server_log.warning("install %s: a special file: %r", top, str(path))
            return "the install left a special file (a device, FIFO or socket)"
    for path, info in found:
        if not stat.S_ISLNK(info.st_mode):
            # Writes go before ownership does: once root's, the uid cannot change it.
            os.chmod(path, stat.S_IMODE(info.st_mode) & 0o555)
        if uid is not None:
            os.lchown(path, 0, 0)
    return None


def _remove(path: Path) -> None:
    """Remove a tree the sandbox wrote (never following its links), writable or not."""

    def retry(function: object, failed: str, _exc: object) -> None:
        with contextlib.suppress(OSError):
            os.chmod(os.path.dirname(failed), 0o700)
            if os.path.isdir(failed) and not os.path.islink(failed):
                os.chmod(failed, 0o700)
                shutil.rmtree(failed, ignore_errors=True)
            else:
                os.unlink(failed)

    if path.is_symlink() or not path.is_dir():
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        return
    shutil.rmtree(path, onerror=retry)


# The sandbox's first command: say it is up, then wait to be let go (its network is plugged
# in meanwhile), and run the installer with nothing on stdin.
_HOLD = 'echo >&{fd}; exec {fd}>&-; read -r _; exec "$@" </dev/null'
READY_TIMEOUT = 20.0


def main(arguments: list[str]) -> int:
    """``python -m gentity.providers.compute.local.install SPEC -- COMMAND…``: run COMMAND in
    an install sandbox described by the JSON SPEC, with this process's environment (the
    installers' own, which may hold a registry token: it is never put on a command line),
    stdout and stderr. Exits with the command's status; its process group is the caller's."""
    spec = json.loads(arguments[0])
    command = arguments[2:]
    bwrap = bwrap_path()
    if bwrap is None:
        print("bubblewrap is missing", file=sys.stderr)
        return 125
    work = Path(spec["work"])
    paths = InstancePaths(root=work, disk=work, volume=work / "home", logs=work / "logs", run=work)
    own_network = network.slirp4netns_path() is not None
    ready_read, ready_write = os.pipe()
    handed = [ready_write]
    info_read = exit_read = None
    seccomp_fd = _seccomp_fd()
    if seccomp_fd is not None:
        handed.append(seccomp_fd)
    info_write: int | None = None
    if own_network:
        info_read, info_write = os.pipe()
        exit_read, exit_write = os.pipe()
        handed += [info_write, exit_write]
    sandbox = SandboxSpec(
        paths=paths,
        data_dir=Path(spec["dataDir"]),
        hostname="gentity-install",
        env={},
        command=[
            "/bin/bash",  # a descriptor number above 9 in a redirection: not dash
            "-c",
            _HOLD.replace("{fd}", str(ready_write)),
            "hold",
            *command,
        ],
        readonly_paths=[Path(p) for p in spec["readonly"]],
        hidden_dirs=[Path(spec["keyDir"])] if spec["keyDir"] else [],
        uid=spec["uid"],
        seccomp_fd=seccomp_fd,
        info_fd=info_write,
        own_network=own_network,
        resolv_conf=network.resolv_conf(work) if own_network else None,
        writable=[(work / "target", spec["target"])],
        keep_env=True,
    )
    try:
        process = subprocess.Popen(
            sandbox_argv(bwrap, sandbox), stdin=subprocess.PIPE, pass_fds=handed, cwd=work
        )
    finally:
        for fd in handed:
            os.close(fd)
    try:
        if info_read is not None and exit_read is not None:
            pid = network.read_sandbox_pid(info_read)
        if not _wait_ready(ready_read):
            print("the install's sandbox did not start", file=sys.stderr)
            process.kill()
            process.wait()
            return 125
        if info_read is not None and exit_read is not None:
            env = {"PATH": DEFAULT_PATH}
            network.attach(pid, exit_read, work / "network.out", [], env)
    except network.NetworkError as exc:
        print(f"the install's network: {exc}", file=sys.stderr)
        process.kill()
        process.wait()
        return 125
    if process.stdin is not None:
        with contextlib.suppress(BrokenPipeError), process.stdin:
            process.stdin.write(b"go\n")
    code = process.wait()
    return code if code >= 0 else 128 - code


def _wait_ready(fd: int) -> bool:
    import select

    readable, _, _ = select.select([fd], [], [], READY_TIMEOUT)
    return bool(readable) and os.read(fd, 1) == b"\n"


def _seccomp_fd() -> int | None:
    from gentity.providers.compute.local.seccomp import SeccompUnavailable, open_filter_fd

    try:
        return open_filter_fd()
    except SeccompUnavailable:
        return None


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    sys.exit(main(sys.argv[1:]))
