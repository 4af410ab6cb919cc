"""The guest daemon: serves health/attach/shell on a socket and supervises the agent.

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
import fcntl
import hmac
import itertools
import json
import os
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any, Final

from gentity.guest import protocol as p
from gentity.guest.children import ChildWatcher, describe_exit, run_piped
from gentity.guest.logformat import format_timestamp
from gentity.guest.logwriter import LogWriter
from gentity.guest.readiness import Readiness
from gentity.guest.redact import Redactor
from gentity.guest.session import PtySession, Viewer
from gentity.guest.textlines import LineLogger

BACKOFF_MIN: Final = 0.5
BACKOFF_MAX: Final = 30.0
STABLE_RUN: Final = 10.0  # a run at least this long resets the restart backoff
REQUEST_TIMEOUT: Final = 5.0
ATTACH_WAIT: Final = 5.0
STOP_TIMEOUT: Final = 5.0
SHELL_KILL_AFTER: Final = 2.0


class StartError(Exception):
    """A program could not be started; the message says why in plain words."""


def rss_kb() -> int:
    """Resident set size of this process in KiB (0 if unknown)."""
    with contextlib.suppress(OSError, ValueError), open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _describe(returncode: int) -> str:
    code, sig = describe_exit(returncode)
    return f"signal {sig}" if sig else f"code {code}"


class Guest:
    """The daemon: socket server, agent supervisor and private shells."""

    def __init__(self, config: p.Config) -> None:
        self._config = config
        # The redactor holds the one other copy of the secrets: it must know what to hide.
        self._redact = Redactor(config.secret_values())
        self._secret = config.secret.encode()
        config.secret = ""  # otherwise one copy (bytes) of the secret
        self._log = LogWriter(config.log_file, redact=self._redact)
        self.state = p.STATE_INSTALLING if config.install else p.STATE_STARTING
        self.error: str | None = None
        self._agent: PtySession | None = None
        self._size = (config.cols, config.rows)
        self._restarts = 0
        self._agent_state = p.AGENT_INSTALLING if config.install else p.AGENT_STARTING
        self._last_exit_code: int | None = None
        self._last_exit_at: float | None = None
        self._ready_at: float | None = None
        self._last_activity: float | None = None
        self._shells: set[PtySession] = set()
        self._connections: set[asyncio.StreamWriter] = set()
        self._changed = asyncio.Event()
        self._stopping = False
        self._socket_id: tuple[int, int] | None = None

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
        try:
            server, shown = await self._listen()
        except OSError as exc:
            message = f"cannot listen on {self._config.listen}: {exc.strerror or exc}"
            self._log.write("error", message)
            print(f"gentity-guest: {message}", file=sys.stderr)
            return 1
        self._log.write("info", f"guest started (pid {os.getpid()}, listening on {shown})")
        with contextlib.suppress(OSError):  # tells a launcher the real address (tcp port 0)
            print(json.dumps({"ready": True, "listen": shown, "pid": os.getpid()}), flush=True)
        _let_go_of_the_launchers_output()
        supervisor = asyncio.create_task(self._supervise())
        await stop.wait()
        await self._shutdown(server, supervisor)
        return 0

    # ----- socket server ---------------------------------------------------

    async def _listen(self) -> tuple[asyncio.Server, str]:
        addr = p.parse_address(self._config.listen)
        limit = p.MAX_REQUEST_BYTES
        if addr.kind == "unix":
            sock = self._bind_unix(addr.path)
            return await asyncio.start_unix_server(self._handle, sock=sock, limit=limit), str(addr)
        if addr.kind == "fd":
            # Bound by the launcher where the instance cannot touch the path; ours is the fd.
            sock = socket.socket(fileno=addr.fd)
            sock.set_inheritable(False)
            if sock.family != socket.AF_UNIX:
                raise OSError(f"{addr} is not a unix socket")
            return await asyncio.start_unix_server(self._handle, sock=sock, limit=limit), str(addr)
        # Bound here rather than by start_server: no resolver thread in the loop.
        family, kind, proto, _, sockaddr = socket.getaddrinfo(
            addr.host, addr.port, type=socket.SOCK_STREAM
        )[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(sockaddr)
        sock.listen(64)
        server = await asyncio.start_server(self._handle, sock=sock, limit=limit)
        host, port = sock.getsockname()[:2]
        return server, str(p.Address("tcp", host=host, port=port))

    def _bind_unix(self, path: str) -> socket.socket:
        os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            if not stat.S_ISSOCK(os.lstat(path).st_mode):
                raise OSError(f"{path} exists and is not a socket")
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                probe.settimeout(1.0)
                if probe.connect_ex(path) == 0:
                    raise OSError(f"another process is serving {path}")
            os.unlink(path)  # stale socket of an earlier run
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)  # born 0600: no window with a looser mode
        try:
            sock.bind(path)
        except OSError:
            sock.close()
            raise
        finally:
            os.umask(old_umask)
        os.chmod(path, 0o600)
        st = os.stat(path)
        self._socket_id = (st.st_dev, st.st_ino)
        sock.listen(64)
        return sock

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._connections.add(writer)
        try:
            request = await self._read_request(reader)
            if isinstance(request, str):
                self._reply(writer, {"ok": False, "error": request})
            elif request["op"] == p.OP_HEALTH:
                self._reply(writer, self.health())
            else:
                size = (p.clamp_size(request.get("cols")), p.clamp_size(request.get("rows")))
                if request["op"] == p.OP_ATTACH:
                    await self._attach(reader, writer, size)
                else:
                    await self._shell(reader, writer, size)
        except (ConnectionError, p.ProtocolError):
            pass
        except Exception as exc:
            self._log.write("error", f"connection handler failed: {type(exc).__name__}: {exc}")
        finally:
            self._connections.discard(writer)
            writer.close()

    async def _read_request(self, reader: asyncio.StreamReader) -> dict[str, Any] | str:
        """The validated request, or the error to answer with."""
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT):
                line = await reader.readline()
        except TimeoutError:
            return "bad request: timed out waiting for the request line"
        except ValueError:
            return f"bad request: request line longer than {p.MAX_REQUEST_BYTES} bytes"
        if not line.endswith(b"\n"):
            return "bad request: connection closed before the end of the request line"
        try:
            request = json.loads(line)
        except ValueError:
            return "bad request: request line is not valid JSON"
        if not isinstance(request, dict):
            return "bad request: request must be a JSON object"
        secret = request.get("secret")
        if not isinstance(secret, str) or not hmac.compare_digest(secret.encode(), self._secret):
            return "unauthorized"
        if request.get("op") not in p.OPS:
            return f"bad request: op must be one of {', '.join(p.OPS)}"
        return request

    @staticmethod
    def _reply(writer: asyncio.StreamWriter, response: dict[str, Any]) -> None:
        if not writer.is_closing():
            writer.write(p.encode_line(response))

    def health(self) -> dict[str, Any]:
        """The health response object."""
        agent = self._agent
        live = agent if agent is not None and not agent.finished else None
        state = self.state
        if state == p.STATE_RUNNING and live is None:
            state = p.STATE_STARTING  # exited; the supervisor has not decided yet
        started = agent.started_at if agent is not None else None
        activity = self._last_activity
        return {
            "ok": True,
            "state": state,
            "error": self.error,
            "agentPid": live.pid if live is not None else None,
            "restarts": self._restarts,
            "startedAt": format_timestamp(started) if started is not None else None,
            "lastActivity": format_timestamp(activity) if activity is not None else None,
            "agent": {
                "state": self._agent_state,
                "restarts": self._restarts,
                "lastExitCode": self._last_exit_code,
                "lastExitAt": _stamp(self._last_exit_at),
                "readyAt": _stamp(self._ready_at),
            },
            "viewers": len(live.viewers) if live is not None else 0,
            "shells": len(self._shells),
            "pid": os.getpid(),
            "rssKb": rss_kb(),
        }

    async def _attach(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        size: tuple[int | None, int | None],
    ) -> None:
        agent = await self._wait_for_agent()
        if agent is None:
            state = self.health()["state"]
            error = self.error if state == p.STATE_ERROR else None
            self._reply(writer, {"ok": False, "error": error or f"agent is not running ({state})"})
            return
        if size != (None, None):
            self._size = (size[0] or self._size[0], size[1] or self._size[1])
            agent.resize(*self._size)
        await self._serve(reader, writer, agent)

    async def _wait_for_agent(self) -> PtySession | None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + ATTACH_WAIT
        while True:
            agent = self._agent
            if self.state == p.STATE_RUNNING and agent is not None and not agent.finished:
                return agent
            remaining = deadline - loop.time()
            if self._stopping or self.state in (p.STATE_ERROR, p.STATE_EXITED) or remaining <= 0:
                return None
            changed = self._changed
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await changed.wait()

    async def _shell(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        size: tuple[int | None, int | None],
    ) -> None:
        if self._stopping:
            self._reply(writer, {"ok": False, "error": "guest is stopping"})
            return
        cols, rows = size[0] or self._config.cols, size[1] or self._config.rows
        try:
            session = self._start_session(self._config.shell, self._config.env, cols, rows)
        except StartError as exc:
            self._reply(writer, {"ok": False, "error": f"cannot start shell: {exc}"})
            return
        self._shells.add(session)
        try:
            await self._serve(reader, writer, session)
        finally:
            session.hangup(SHELL_KILL_AFTER)  # private shell: it dies with its connection
            await session.wait()
            self._shells.discard(session)

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, session: PtySession
    ) -> None:
        """Accept the request, stream the session to the client and apply its frames
        until the connection closes (or the session ends and closes it)."""
        self._reply(writer, {"ok": True})
        viewer = Viewer(writer)
        session.attach(viewer)  # replay, then live output: no await in between
        try:
            while (frame := await p.read_frame(reader)) is not None:
                kind, payload = frame
                if kind == p.FRAME_INPUT:
                    session.write(payload)
                elif kind == p.FRAME_RESIZE and (size := p.decode_resize(payload)) is not None:
                    session.resize(*size)
                # Unknown frame types are ignored so that newer clients keep working.
        finally:
            session.detach(viewer)
            viewer.close()

    # ----- processes -------------------------------------------------------

    def _touch(self) -> None:
        self._last_activity = time.time()

    def _set_state(self, state: str) -> None:
        self.state = state
        self._changed.set()  # wake every waiter, then start a fresh event
        self._changed = asyncio.Event()

    def _fail(self, message: str) -> None:
        message = self._redact(message)  # health shows it (e.g. the last install line)
        self.error = message
        self._agent_state = p.AGENT_CRASHED
        self._log.write("error", message)
        self._set_state(p.STATE_ERROR)

    def _resolve(self, program: str, env: dict[str, str]) -> str:
        """Path of ``program`` as the child would find it; StartError if unusable."""
        if "/" in program:
            path = os.path.join(self._config.workdir, program)  # relative to the child's cwd
            if not os.path.exists(path):
                raise StartError(f"{program} not found")
            if os.path.isdir(path) or not os.access(path, os.X_OK):
                raise StartError(f"{program} is not executable")
            return path
        found = shutil.which(program, path=env.get("PATH", os.defpath))
        if found is None:
            raise StartError(f"{program} not found")
        return found

    def _start_session(
        self,
        argv: list[str],
        extra_env: dict[str, str],
        cols: int,
        rows: int,
        replay_bytes: int = 0,
        logger: LineLogger | None = None,
        on_output: Callable[[bytes], None] | None = None,
    ) -> PtySession:
        # The child env is built per spawn and not kept: PtySession drops it too.
        env = {**os.environ, **extra_env}
        env.setdefault("TERM", "xterm-256color")
        exe = self._resolve(argv[0], env)
        session = PtySession(
            argv,
            executable=exe,
            cwd=self._config.workdir,
            env=env,
            cols=cols,
            rows=rows,
            watcher=self._watcher,
            cgroup_fd=self._config.child_cgroup_fd,
            replay_bytes=replay_bytes,
            logger=logger,
            on_activity=self._touch,
            on_output=on_output,
        )
        try:
            session.start()
        except (OSError, subprocess.SubprocessError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise StartError(f"{argv[0]}: {reason.lower()}") from None
        return session

    async def _supervise(self) -> None:
        """Install, then run the agent under the restart policy."""
        try:
            if self._config.install is not None:
                error = await self._install(self._config.install)
                if error is not None:
                    self._fail(f"install failed: {error}")
                    return
            delay = BACKOFF_MIN
            while True:
                self._set_state(p.STATE_STARTING)
                self._agent_state = p.AGENT_STARTING
                self._ready_at = None
                readiness = Readiness(self._config.ready, self._on_agent_ready)
                logger = LineLogger(
                    emit_lines=lambda lines: self._log.write_lines("info", lines),
                    redact=self._redact,
                )
                try:
                    agent = self._start_session(
                        self._config.command,
                        self._config.env,
                        *self._size,
                        replay_bytes=self._config.replay_bytes,
                        logger=logger,
                        on_output=readiness.feed,
                    )
                except StartError as exc:
                    readiness.cancel()
                    self._fail(f"cannot start agent: {exc}")
                    return
                self._agent = agent
                self._log.write("info", f"agent started (pid {agent.pid})")
                self._set_state(p.STATE_RUNNING)
                try:
                    await agent.wait()
                finally:
                    readiness.cancel()
                returncode = agent.returncode or 0
                # A signal reads as the shell reports it: 128 + its number.
                self._last_exit_code = returncode if returncode >= 0 else 128 - returncode
                self._last_exit_at = time.time()
                level = "warn" if returncode else "info"
                self._log.write(level, f"agent exited with {_describe(returncode)}")
                policy = self._config.restart
                if policy == "never" or (policy == "on-failure" and returncode == 0):
                    self._agent_state = p.AGENT_EXITED if returncode == 0 else p.AGENT_CRASHED
                    self._set_state(p.STATE_EXITED)
                    return
                self._agent_state = p.AGENT_BACKOFF
                if time.time() - (agent.started_at or 0.0) >= STABLE_RUN:
                    delay = BACKOFF_MIN
                self._set_state(p.STATE_STARTING)
                self._log.write("info", f"restarting in {delay:g}s")
                await asyncio.sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX)
                self._restarts += 1
        except Exception as exc:
            self._fail(f"internal error: {type(exc).__name__}: {exc}")

    def _on_agent_ready(self) -> None:
        self._agent_state = p.AGENT_READY
        self._ready_at = time.time()
        self._log.write("info", "agent ready")
        self._changed.set()
        self._changed = asyncio.Event()

    async def _install(self, spec: p.InstallConfig) -> str | None:
        """Run the install step under the shared lock; returns the error, or None."""
        try:
            lock = _open_lock(spec)
        except OSError as exc:
            return f"cannot open lock file {spec.lock_file}: {exc.strerror}"
        try:
            self._set_state(p.STATE_INSTALLING)
            # Non-blocking attempts: a blocking flock would freeze health meanwhile.
            for attempt in itertools.count():
                if _try_lock(lock):
                    break
                if attempt == 0:
                    self._log.write("info", "install: waiting for another install to finish")
                await asyncio.sleep(0.5)
            if _marker_exists(spec.marker):
                self._log.write("info", "install: already installed")
                return None
            env = {**os.environ, **spec.env}  # the agent's env is deliberately not here
            for argv in spec.commands:
                error = await self._run_install_command(argv, env)
                if error is not None:
                    return error
            _write_marker(spec.marker)
            self._log.write("info", "install: done")
            return None
        finally:
            os.close(lock)  # also releases the flock
            spec.env = {}  # needed only once: drop the copy

    async def _run_install_command(self, argv: list[str], env: dict[str, str]) -> str | None:
        name = os.path.basename(argv[0])
        try:
            exe = self._resolve(argv[0], env)
        except StartError as exc:
            return str(exc)
        self._log.write("info", f"install: running {shlex.join(argv)}")
        last = [""]  # the last output line explains most failures

        def on_line(line: str) -> None:
            last[0] = line
            self._log.write("info", f"install: {line}")

        try:
            returncode = await run_piped(
                argv,
                exe,
                cwd=self._config.workdir,
                env=env,
                watcher=self._watcher,
                on_line=on_line,
                cgroup_fd=self._config.child_cgroup_fd,
                redact=self._redact,
            )
        except OSError as exc:
            return f"{name} could not be started: {(exc.strerror or str(exc)).lower()}"
        if returncode == 0:
            return None
        code, sig_name = describe_exit(returncode)
        what = (
            f"{name} exited with code {code}"
            if sig_name is None
            else f"{name} killed by {sig_name}"
        )
        return f"{what}: {last[0]}" if last[0] else what

    # ----- shutdown --------------------------------------------------------

    async def _shutdown(self, server: asyncio.Server, supervisor: asyncio.Task[None]) -> None:
        self._stopping = True
        self._log.write("info", "guest stopping")
        server.close()
        supervisor.cancel()  # no restarts from here on; also stops an install
        with contextlib.suppress(asyncio.CancelledError):
            await supervisor
        sessions = [s for s in (self._agent, *self._shells) if s is not None]
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
        agent = self._agent
        if agent in was_running and agent is not None and agent.returncode is not None:
            self._log.write("info", f"agent exited with {_describe(agent.returncode)}")
        for writer in list(self._connections):
            writer.close()
        self._remove_socket()
        self._watcher.close()
        self._log.write("info", "guest stopped")
        self._log.close()

    def _remove_socket(self) -> None:
        addr = p.parse_address(self._config.listen)
        if addr.kind != "unix" or self._socket_id is None:
            return
        with contextlib.suppress(OSError):
            st = os.lstat(addr.path)
            if (st.st_dev, st.st_ino) == self._socket_id:  # still ours, not a successor's
                os.unlink(addr.path)


# Small synchronous helpers, kept out of async functions on purpose: they touch
# only local files and return at once.


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


def _open_lock(spec: p.InstallConfig) -> int:
    for path in (spec.lock_file, spec.marker):
        os.makedirs(os.path.dirname(path), exist_ok=True)
    return os.open(spec.lock_file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _marker_exists(path: str) -> bool:
    return os.path.exists(path)


def _write_marker(path: str) -> None:
    with open(path, "w") as f:
        f.write(format_timestamp() + "\n")
