"""The agent's supervisor: install once, start the agent, restart it by policy, track its state.

Two states are kept: the guest's (``installing``, ``starting``, ``running``, ``exited``,
``error``: what the supervisor is doing) and the agent's (``starting``, ``ready``,
``backoff``…: whether one can work with it); see :mod:`gentity.guest.protocol`.
Standard library only.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import deque
from typing import Any, Final

from gentity.guest import protocol as p
from gentity.guest.changes import Changes
from gentity.guest.children import ChildWatcher, StartError, describe_exit
from gentity.guest.config import Config, InstallPlan
from gentity.guest.install import install_once
from gentity.guest.launcher import Launcher
from gentity.guest.logformat import format_timestamp
from gentity.guest.logwriter import LogWriter
from gentity.guest.prepare import prepare
from gentity.guest.readiness import Readiness
from gentity.guest.session import PtySession
from gentity.guest.textlines import LineLogger

BACKOFF_MIN: Final = 0.5
BACKOFF_MAX: Final = 30.0
STABLE_RUN: Final = 10.0  # a run at least this long resets the restart backoff
INSTALL_LINES: Final = 5  # the last lines of install output that health shows


def describe(returncode: int) -> str:
    """How a program ended, for the log: ``code 3`` or ``signal SIGTERM``."""
    code, sig = describe_exit(returncode)
    return f"signal {sig}" if sig else f"code {code}"


class Supervisor:
    """Runs the agent of ``config`` for as long as :meth:`run` is not cancelled."""

    def __init__(
        self,
        config: Config,
        *,
        log: LogWriter,
        launcher: Launcher,
        watcher: ChildWatcher,
        changes: Changes,
        cgroup_fd: int | None,
    ) -> None:
        self._config = config
        self._log = log
        self._launcher = launcher
        self._watcher = watcher
        self._changes = changes
        self._cgroup_fd = cgroup_fd
        self.state = p.STATE_INSTALLING if config.install else p.STATE_STARTING
        self.error: str | None = None
        self.agent: PtySession | None = None
        self.size = (config.cols, config.rows)
        self.restarts = 0
        self.agent_state = p.AGENT_INSTALLING if config.install else p.AGENT_STARTING
        self.last_exit_code: int | None = None
        self.last_exit_at: float | None = None
        self.ready_at: float | None = None
        self.restart_delay: float | None = None
        """While in back-off: the seconds it waits before starting the agent again."""
        self.install: dict[str, Any] | None = None
        """The guest's own install, as health reports it: state, package, startedAt, lines."""
        self._install_lines: deque[str] = deque(maxlen=INSTALL_LINES)
        self.stopping = False
        """Set on shutdown: nobody waits for the agent any more."""

    def live_agent(self) -> PtySession | None:
        """The agent's session while its process runs."""
        agent = self.agent
        return agent if agent is not None and not agent.finished else None

    def reported_state(self) -> str:
        """The guest's state as health reports it."""
        if self.state == p.STATE_RUNNING and self.live_agent() is None:
            return p.STATE_STARTING  # exited; the restart policy has not been applied yet
        return self.state

    def resize(self, cols: int | None, rows: int | None) -> None:
        """Resize the agent's terminal; a missing dimension keeps its current value."""
        self.size = (cols or self.size[0], rows or self.size[1])
        if self.agent is not None:
            self.agent.resize(*self.size)

    async def wait_for_agent(self) -> PtySession | None:
        """The running agent, once it runs; None if it will not (error, exited, stopping).
        Callers bound the wait with a timeout."""
        while True:
            agent = self.live_agent()
            if self.state == p.STATE_RUNNING and agent is not None:
                return agent
            if self.stopping or self.state in (p.STATE_ERROR, p.STATE_EXITED):
                return None
            await self._changes.next()

    async def run(self) -> None:
        """Prepare the instance, install, then run the agent under the restart policy."""
        try:
            error = await self._prepare()
            if error is not None:
                self._fail(error)
                return
            if self._config.install is not None:
                error = await self._install(self._config.install)
                if error is not None:
                    self._fail(f"install failed: {error}")
                    return
            await self._run_agent()
        except Exception as exc:
            self._fail(f"internal error: {type(exc).__name__}: {exc}")

    async def _prepare(self) -> str | None:
        config = self._config
        # git needs none of the agent's secrets (the model key, the user's env values).
        env = {k: v for k, v in {**os.environ, **config.env}.items() if k not in config.secret_env}
        return await prepare(
            config.prepare,
            home=env.get("HOME") or config.workdir,
            workdir=config.workdir,
            env=env,
            log=self._log,
            wait_exit=self._watcher.exited,
            cgroup_fd=self._cgroup_fd,
        )

    def install_report(self) -> dict[str, Any] | None:
        """The install's progress for health, with its last output lines (redacted)."""
        if self.install is None:
            return None
        return {**self.install, "lines": list(self._install_lines)}

    async def _install(self, plan: InstallPlan) -> str | None:
        self.install = {
            "state": p.INSTALL_RUNNING,
            "package": plan.package,
            "startedAt": format_timestamp(),
        }
        self._set_state(p.STATE_INSTALLING)
        env = {**os.environ, **plan.env}  # the agent's env is deliberately not here
        plan.env = {}  # needed only once: drop the copy
        error = await install_once(
            plan,
            cwd=self._config.workdir,
            env=env,
            log=self._log,
            wait_exit=self._watcher.exited,
            cgroup_fd=self._cgroup_fd,
            on_line=self._install_lines.append,
        )
        self.install["state"] = p.INSTALL_FAILED if error else p.INSTALL_DONE
        self._changes.bump()
        return error

    async def _run_agent(self) -> None:
        delay = BACKOFF_MIN
        while True:
            self._set_state(p.STATE_STARTING)
            self.agent_state = p.AGENT_STARTING
            self.ready_at = None
            readiness = Readiness(self._config.ready, self._on_ready)
            logger = LineLogger(
                emit_lines=lambda lines: self._log.write_lines("info", lines),
                redact=self._log.redact,
            )
            try:
                agent = self._launcher.start(
                    self._config.command,
                    self._config.env,
                    *self.size,
                    replay_bytes=self._config.replay_bytes,
                    logger=logger,
                    on_output=readiness.feed,
                )
            except StartError as exc:
                readiness.cancel()
                self._fail(f"cannot start agent: {exc}")
                return
            self.agent = agent
            self._log.write("info", f"agent started (pid {agent.pid})")
            self._set_state(p.STATE_RUNNING)
            try:
                await agent.wait()
            finally:
                readiness.cancel()
            returncode = agent.returncode or 0
            # A signal reads as the shell reports it: 128 + its number.
            self.last_exit_code = returncode if returncode >= 0 else 128 - returncode
            self.last_exit_at = time.time()
            level = "warn" if returncode else "info"
            self._log.write(level, f"agent exited with {describe(returncode)}")
            policy = self._config.restart
            if policy == "never" or (policy == "on-failure" and returncode == 0):
                self.agent_state = p.AGENT_EXITED if returncode == 0 else p.AGENT_CRASHED
                self._set_state(p.STATE_EXITED)
                return
            self.agent_state = p.AGENT_BACKOFF
            if time.time() - (agent.started_at or 0.0) >= STABLE_RUN:
                delay = BACKOFF_MIN
            self.restart_delay = delay
            self._set_state(p.STATE_STARTING)
            self._log.write("info", f"restarting in {delay:g}s")
            await asyncio.sleep(delay)
            self.restart_delay = None
            delay = min(delay * 2, BACKOFF_MAX)
            self.restarts += 1

    def _set_state(self, state: str) -> None:
        self.state = state
        self._changes.bump()

    def _fail(self, message: str) -> None:
        message = self._log.redact(message)  # health shows it (e.g. the last install line)
        self.error = message
        self.agent_state = p.AGENT_CRASHED
        self._log.write("error", message)
        self._set_state(p.STATE_ERROR)

    def _on_ready(self) -> None:
        self.agent_state = p.AGENT_READY
        self.ready_at = time.time()
        self._log.write("info", "agent ready")
        self._changes.bump()
