"""The guest daemon: puts the socket server and, once configured, the agent's supervisor
together, and shuts them down cleanly.

Started by ``python -m gentity.guest`` with a bootstrap that holds no secret (see
:mod:`gentity.guest.config`); the agent's config and its secrets arrive later in the
``configure`` request, which only a caller holding the guest secret can make. Secrets (the
guest secret, ``env`` and ``install.env`` values) are kept only where needed and are never
logged; the guest secret and the env values named in ``secretEnv`` are redacted from every
record, also when the agent or an install prints them. Standard library only: this runs
inside remote VMs.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import os
import signal
import sys
from typing import Any, Final

from gentity.guest import protocol as p
from gentity.guest.changes import Changes
from gentity.guest.children import ChildWatcher
from gentity.guest.config import Bootstrap, ConfigError, parse_config
from gentity.guest.launcher import Launcher
from gentity.guest.logformat import format_timestamp
from gentity.guest.logwriter import LogWriter
from gentity.guest.redact import Redactor
from gentity.guest.server import Configured, GuestServer
from gentity.guest.supervisor import Supervisor, describe

STOP_TIMEOUT: Final = 5.0


def rss_kb() -> int:
    """Resident set size of this process in KiB (0 if unknown)."""
    with contextlib.suppress(OSError, ValueError), open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class Guest:
    """The daemon: a socket server and, once configured, the agent's supervisor."""

    def __init__(self, bootstrap: Bootstrap) -> None:
        self._bootstrap = bootstrap
        self._changes = Changes()
        self._supervising: asyncio.Task[None] | None = None
        self._shown = bootstrap.listen

    async def run(self) -> int:
        """Serve until SIGTERM/SIGINT, then shut down cleanly. Returns the exit code."""
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        # A daemon outlives the terminal that launched it. A handler rather than
        # SIG_IGN, so children get the default SIGHUP disposition back on exec.
        loop.add_signal_handler(signal.SIGHUP, lambda: None)
        self._watcher = ChildWatcher(loop)
        self._server = GuestServer(
            self._bootstrap.listen,
            secret_sha256=self._bootstrap.secret_sha256,
            health=self.health,
            configure=self.configure,
            changes=self._changes,
        )
        try:
            self._shown = await self._server.listen()
        except OSError as exc:
            print(
                f"gentity-guest: cannot listen on {self._bootstrap.listen}: {exc}", file=sys.stderr
            )
            return 1
        with contextlib.suppress(OSError):  # tells a launcher the real address (tcp port 0)
            print(
                json.dumps({"ready": True, "listen": self._shown, "pid": os.getpid()}), flush=True
            )
        if not self._bootstrap.echo_log:
            _let_go_of_the_launchers_output()
        await stop.wait()
        await self._shutdown()
        return 0

    def configure(self, raw: object, secret: str) -> str | None:
        """Apply the first config and start the agent; None, or the error to answer with.

        A repeated ``configure`` with the same config succeeds without doing anything (the
        control plane configures after every boot and may retry); a different one is refused.
        """
        digest = hashlib.sha256(json.dumps(raw, sort_keys=True).encode()).digest()
        if (configured := self._server.configured) is not None:
            return None if hmac.compare_digest(digest, configured.digest) else "already configured"
        if self._server.stopping:
            return "guest is stopping"
        try:
            config = parse_config(raw)
        except ConfigError as exc:  # its messages name fields, never values
            return f"invalid config: {exc}"
        # The redactor holds the one other copy of the secrets: it must know what to hide.
        redact = Redactor([secret, *config.secret_values()])
        try:
            os.makedirs(config.workdir, exist_ok=True)
            log = LogWriter(config.log_file, redact=redact, echo=self._bootstrap.echo_log)
        except OSError as exc:
            return f"cannot prepare the workdir or log: {exc.strerror or exc}"
        launcher = Launcher(
            workdir=config.workdir,
            watcher=self._watcher,
            cgroup_fd=self._bootstrap.child_cgroup_fd,
        )
        supervisor = Supervisor(
            config,
            log=log,
            launcher=launcher,
            watcher=self._watcher,
            changes=self._changes,
            cgroup_fd=self._bootstrap.child_cgroup_fd,
        )
        self._server.configured = Configured(config, digest, log, launcher, supervisor)
        log.write("info", f"guest started (pid {os.getpid()}, listening on {self._shown})")
        self._supervising = asyncio.create_task(supervisor.run())
        self._changes.bump()
        return None

    def health(self) -> dict[str, Any]:
        """The health response object."""
        base = {"ok": True, "version": self._changes.version, "pid": os.getpid()}
        configured = self._server.configured
        if configured is None:
            state = p.STATE_UNCONFIGURED
            return {**base, "configured": False, "state": state, "rssKb": rss_kb()}
        sup = configured.supervisor
        agent, live = sup.agent, sup.live_agent()
        started = agent.started_at if agent is not None else None
        return {
            **base,
            "configured": True,
            "state": sup.reported_state(),
            "error": sup.error,
            "agentPid": live.pid if live is not None else None,
            "restarts": sup.restarts,
            "startedAt": _stamp(started),
            "lastActivity": _stamp(configured.launcher.last_activity),
            "agent": {
                "state": sup.agent_state,
                "restarts": sup.restarts,
                "lastExitCode": sup.last_exit_code,
                "lastExitAt": _stamp(sup.last_exit_at),
                "readyAt": _stamp(sup.ready_at),
                "restartDelay": sup.restart_delay,
            },
            "install": sup.install_report(),
            "viewers": len(live.viewers) if live is not None else 0,
            "shells": len(self._server.shells),
            "execs": len(self._server.execs),
            "rssKb": rss_kb(),
        }

    async def _shutdown(self) -> None:
        self._server.stopping = True
        self._server.close()
        configured = self._server.configured
        if configured is None or self._supervising is None:
            self._server.close_connections()
            self._watcher.close()
            return
        configured.supervisor.stopping = True
        log = configured.log
        log.write("info", "guest stopping")
        self._supervising.cancel()  # no restarts from here on; also stops an install
        with contextlib.suppress(asyncio.CancelledError):
            await self._supervising
        agent = configured.supervisor.agent
        sessions = [s for s in (agent, *self._server.shells) if s is not None]
        was_running = [s for s in sessions if not s.finished]
        for session in sessions:
            session.signal_group(signal.SIGHUP)
            session.signal_group(signal.SIGTERM)
        # Give leaders and the rest of their sessions STOP_TIMEOUT to exit.
        for _ in range(int(STOP_TIMEOUT / 0.05)):
            if not any(s.alive_in_session() for s in sessions):
                break
            await asyncio.sleep(0.05)
        for session in sessions:
            session.kill_all()
        for execution in self._server.execs:
            execution.kill()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2.0):
                for session in sessions:
                    await session.wait()  # viewers got their exit frames by now
        if agent in was_running and agent is not None and agent.returncode is not None:
            log.write("info", f"agent exited with {describe(agent.returncode)}")
        self._server.close_connections()
        self._watcher.close()
        log.write("info", "guest stopped")
        log.close()


def _let_go_of_the_launchers_output() -> None:
    """Point stdout and stderr at /dev/null once the launcher has read what it waits for.

    They are a file of the launcher's, outside the instance's volume and quota; the agent
    runs as this process's uid and could make it write there without end. From here on
    the log is where the daemon reports.
    """
    with contextlib.suppress(OSError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        os.close(devnull)


def _stamp(when: float | None) -> str | None:
    return format_timestamp(when) if when is not None else None
