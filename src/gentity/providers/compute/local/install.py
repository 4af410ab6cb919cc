"""Installing an agent's CLI into the shared cache, once, with progress in the instance's log.

The cache (``<data dir>/agents/<agent>``) is shared by every instance of that agent and
mounted read-only into their sandboxes, so one instance cannot tamper with another's binaries.
The install itself therefore runs here, in the control plane, before the guest starts; a file
lock makes concurrent first starts of the same agent wait for one install.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from pathlib import Path

from gentity.catalog import InstallStep
from gentity.guest.logwriter import LogWriter
from gentity.providers.compute.base import ProviderError
from gentity.providers.compute.local.sandbox import DEFAULT_PATH, TLS_TRUST_VARIABLES

INSTALL_TIMEOUT_SECONDS = 15 * 60
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


def cache_dir(agents_dir: Path, agent_id: str) -> Path:
    return agents_dir / agent_id


def bin_dir(agents_dir: Path, agent_id: str) -> Path:
    return cache_dir(agents_dir, agent_id) / "bin"


def ensure_installed(agents_dir: Path, agent_id: str, step: InstallStep, log: LogWriter) -> None:
    """Install the agent's CLI unless a previous install finished. Blocking: run in a thread."""
    target = cache_dir(agents_dir, agent_id)
    marker = target / ".installed"
    agents_dir.mkdir(parents=True, exist_ok=True)
    with (agents_dir / f"{agent_id}.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.exists():
            return
        package = step.npm or step.pypi or ""
        source = "npm" if step.npm else "PyPI"
        log.write("info", f"install: installing {package} from {source} (first use of {agent_id})")
        for command in _commands(target, step):
            _run(command, target, log)
        marker.write_text(package + "\n")
        log.write("info", f"install: {package} installed")


def _commands(target: Path, step: InstallStep) -> list[list[str]]:
    if step.npm:
        return [
            [
                "npm",
                "install",
                "--global",
                "--prefix",
                str(target),
                "--no-fund",
                "--no-audit",
                step.npm,
            ]
        ]
    if step.pypi:
        return [
            [sys.executable, "-m", "venv", "--clear", str(target)],
            [str(target / "bin" / "python"), "-m", "pip", "install", "--quiet", step.pypi],
        ]
    raise AgentInstallError("install failed: the catalog names no package")


def _run(command: list[str], target: Path, log: LogWriter) -> None:
    env = {
        "PATH": DEFAULT_PATH,
        "HOME": os.environ.get("HOME", str(target.parent)),  # for the user's ~/.npmrc
        "npm_config_cache": str(target.parent / ".npm-cache"),
        "LANG": "C.UTF-8",
    }
    env.update({k: v for k, v in os.environ.items() if k.startswith(_PASSTHROUGH_PREFIXES)})
    name = Path(command[0]).name
    last_line = ""
    try:
        process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=target.parent,
        )
    except FileNotFoundError as exc:
        raise AgentInstallError(f"install failed: {name} not found") from exc
    for raw in process.stdout or ():  # always a pipe here (stdout=PIPE)
        line = raw.decode(errors="replace").rstrip()
        if line:
            last_line = line
            log.write("info", f"install: {line}")
    try:
        code = process.wait(timeout=INSTALL_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired as exc:
        process.kill()
        raise AgentInstallError(f"install failed: {name} timed out") from exc
    if code != 0:
        detail = f": {last_line}" if last_line else ""
        raise AgentInstallError(f"install failed: {name} exited with code {code}{detail}")
