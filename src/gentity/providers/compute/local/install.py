"""Installing an agent's CLI into the shared cache, once, with progress in the instance's log.

The cache (``<data dir>/agents/<agent>-<version>``) is shared by every instance of that agent
at that version (see :meth:`InstallStep.cache_name`) and mounted read-only into their
sandboxes, so one instance cannot tamper with another's binaries. The install itself therefore
runs here, in the control plane, before the guest starts, with the same install-once-under-a-
lock as the guest's (:mod:`gentity.guest.install`): concurrent first starts of the same agent
wait for one install. Install scripts run here too, as the server's user: the packages are
pinned to exact versions for that reason (see docs/agents.md).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import anyio

from gentity import models
from gentity.catalog import InstallStep
from gentity.guest.config import InstallPlan
from gentity.guest.install import install_once
from gentity.guest.logwriter import LogWriter
from gentity.providers.compute.base import ProviderError
from gentity.providers.compute.local.sandbox import DEFAULT_PATH, TLS_TRUST_VARIABLES

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


async def ensure_installed(
    agents_dir: Path, agent_id: str, step: InstallStep, log: LogWriter
) -> None:
    """Install the agent's CLI unless a previous install finished; AgentInstallError if not.

    The failure's cause (see :func:`gentity.guest.install.install_once`) is also written to
    the instance's log at ERROR."""
    target = cache_dir(agents_dir, agent_id, step)
    plan = InstallPlan(
        lock_file=str(agents_dir / f"{step.cache_name(agent_id)}.lock"),
        marker=str(target / ".installed"),
        commands=step.commands(str(target), sys.executable),
        env={},
    )
    try:
        with anyio.fail_after(INSTALL_TIMEOUT_SECONDS):
            error = await install_once(
                plan, cwd=str(agents_dir), env=_environment(target), log=log, wait_exit=_wait
            )
    except TimeoutError:
        error = f"not done after {INSTALL_TIMEOUT_SECONDS // 60} minutes"
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
    env.update({k: v for k, v in os.environ.items() if k.startswith(_PASSTHROUGH_PREFIXES)})
    return env


def _wait(process: subprocess.Popen[bytes]) -> asyncio.Future[int]:
    # A thread blocked in wait(): the server must not take over SIGCHLD as the guest does.
    return asyncio.get_running_loop().run_in_executor(None, process.wait)
