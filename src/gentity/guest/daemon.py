"""The guest daemon: puts the socket server and the agent's supervisor together, and shuts
them down cleanly.

Started by ``python -m gentity.guest`` with its JSON config on stdin (see
:func:`gentity.guest.protocol.parse_config`). Secrets from the config (the guest
secret, ``env`` and ``install.env`` values) are kept only where needed and are
never logged; the guest secret and the env values named in ``secretEnv`` are
redacted from every record, also when the agent or an install prints them.
Standard library only: this runs inside remote VMs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from typing import Any, Final

from gentity.guest import protocol as p
from gentity.guest.children import ChildWatcher
from gentity.guest.launcher import Launcher
from gentity.guest.logformat import format_timestamp
from gentity.guest.logwriter import LogWriter
from gentity.guest.redact import Redactor
from gentity.guest.server import GuestServer
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
    """The daemon: a socket server, the agent's supervisor and the private shells."""

    def __init__(self, config: p.Config) -> None:
        self._config = config
        # The redactor holds the one other copy of the secrets: it must know what to hide.
        redact = Redactor(config.secret_values())
        self._secret = config.secret.encode()
        config.secret = ""  # otherwise one copy (bytes) of the secret
        self._log = LogWriter(config.log_file, redact=redact)

    async def run(self) -> int:
        """Serve until SIGTERM/SIGINT, then shut down cleanly. Returns the exit code."""
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        # A daemon outlives the terminal that launched it. A handler rather than
        # SIG_IGN, so children get the default SIGHUP disposition back on exec.
        loop.add_signal_handler(signal.SIGHUP, lambda: None)
        config = self._config
        self._watcher = ChildWatcher(loop)
        self._launcher = Launcher(
            workdir=config.workdir, watcher=self._watcher, cgroup_fd=config.child_cgroup_fd
        )
        self._supervisor = Supervisor(
            config, log=self._log, launcher=self._launcher, watcher=self._watcher
        )
        self._server = GuestServer(
            config,
            secret=self._secret,
            supervisor=self._supervisor,
            launcher=self._launcher,
            log=self._log,
            health=self.health,
        )
        try:
            shown = await self._server.listen()
        except OSError as exc:
            message = f"cannot listen on {config.listen}: {exc.strerror or exc}"
            self._log.write("error", message)
            print(f"gentity-guest: {message}", file=sys.stderr)
            return 1
        self._log.write("info", f"guest started (pid {os.getpid()}, listening on {shown})")
        with contextlib.suppress(OSError):  # tells a launcher the real address (tcp port 0)
            print(json.dumps({"ready": True, "listen": shown, "pid": os.getpid()}), flush=True)
        _let_go_of_the_launchers_output()
        supervisor = asyncio.create_task(self._supervisor.run())
        await stop.wait()
        await self._shutdown(supervisor)
        return 0

    def health(self) -> dict[str, Any]:
        """The health response object."""
        sup = self._supervisor
        agent, live = sup.agent, sup.live_agent()
        started = agent.started_at if agent is not None else None
        return {
            "ok": True,
            "state": sup.reported_state(),
            "error": sup.error,
            "agentPid": live.pid if live is not None else None,
            "restarts": sup.restarts,
            "startedAt": _stamp(started),
            "lastActivity": _stamp(self._launcher.last_activity),
            "agent": {
                "state": sup.agent_state,
                "restarts": sup.restarts,
                "lastExitCode": sup.last_exit_code,
                "lastExitAt": _stamp(sup.last_exit_at),
                "readyAt": _stamp(sup.ready_at),
            },
            "viewers": len(live.viewers) if live is not None else 0,
            "shells": len(self._server.shells),
            "pid": os.getpid(),
            "rssKb": rss_kb(),
        }

    async def _shutdown(self, supervisor: asyncio.Task[None]) -> None:
        self._supervisor.stopping = self._server.stopping = True
        self._log.write("info", "guest stopping")
        self._server.close()
        supervisor.cancel()  # no restarts from here on; also stops an install
        with contextlib.suppress(asyncio.CancelledError):
            await supervisor
        agent = self._supervisor.agent
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
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2.0):
                for session in sessions:
                    await session.wait()  # viewers got their exit frames by now
        if agent in was_running and agent is not None and agent.returncode is not None:
            self._log.write("info", f"agent exited with {describe(agent.returncode)}")
        self._server.close_connections()
        self._watcher.close()
        self._log.write("info", "guest stopped")
        self._log.close()


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
