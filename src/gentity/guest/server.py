"""The guest's socket: authenticates each request, then answers it or streams.

Listens on a unix socket path, a socket the launcher bound and handed over (``fd:N``) or
TCP (see :func:`gentity.guest.protocol.parse_address`). ``configure`` hands the agent's
config over once; ``attach`` streams the agent's terminal, shared with every other viewer;
``shell`` starts a private shell that dies with its connection; ``logs`` and ``follow``
read the structured log; ``wait`` answers health once it changed; ``exec`` runs a command on
pipes beside the agent; ``ports`` lists the TCP ports listening inside the instance and
``connect`` pipes a connection to one of them (preview URLs). Standard library only.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import os
import socket
import stat
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from gentity.guest import fileserve
from gentity.guest import protocol as p
from gentity.guest.changes import Changes
from gentity.guest.children import StartError
from gentity.guest.config import Config
from gentity.guest.execute import Execution, check_cwd, wait_killed
from gentity.guest.files import Volume
from gentity.guest.launcher import Launcher
from gentity.guest.logreader import follow_offsets, offset_before_last, tail_with_cursor
from gentity.guest.logwriter import LogWriter
from gentity.guest.ports import listening_ports, open_port, pipe, valid_port
from gentity.guest.session import PtySession, Viewer
from gentity.guest.supervisor import Supervisor

REQUEST_TIMEOUT: Final = 5.0
ATTACH_WAIT: Final = 5.0
SHELL_KILL_AFTER: Final = 2.0
#: After an ``exec`` exit frame, how long the client gets to close its end first.
EXEC_CLOSE_WAIT: Final = 5.0

#: How often a ``follow`` looks for new lines in a quiet log: the floor of a follower's lag.
#: Each control plane process keeps one follow per instance (however many users follow it),
#: so polling this often costs an instance little.
FOLLOW_POLL: Final = 0.05


@dataclass
class Configured:
    """What exists once the guest got its config: the agent's supervisor and its tools."""

    config: Config
    digest: bytes
    """sha256 of the config as received, to tell a repeated ``configure`` from another."""
    log: LogWriter
    launcher: Launcher
    supervisor: Supervisor


class GuestServer:
    """Serves the guest protocol for one daemon.

    ``health`` builds the health answer; ``configure(config, secret)`` applies a first
    config and returns None, or the error to answer with; ``changes`` moves with health.
    """

    def __init__(
        self,
        listen: str,
        *,
        secret_sha256: bytes,
        health: Callable[[], dict[str, Any]],
        configure: Callable[[object, str], str | None],
        changes: Changes,
    ) -> None:
        self._listen = listen
        self._secret_sha256 = secret_sha256
        self._health = health
        self._configure = configure
        self._changes = changes
        self.configured: Configured | None = None
        self.shells: set[PtySession] = set()
        self.execs: set[Execution] = set()
        self._connections: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None
        self._socket_id: tuple[int, int] | None = None
        self.own_port: int | None = None
        """The TCP port the guest itself listens on, if any: never listed nor connected to."""
        self.stopping = False
        """Set on shutdown: no new shells."""

    async def listen(self) -> str:
        """Start serving; returns the address as bound (the real port for ``tcp:…:0``)."""
        addr = p.parse_address(self._listen)
        limit = p.MAX_REQUEST_BYTES
        if addr.kind == "unix":
            sock = self._bind_unix(addr.path)
            self._server = await asyncio.start_unix_server(self._handle, sock=sock, limit=limit)
            return str(addr)
        if addr.kind == "fd":
            # Bound by the launcher where the instance cannot touch the path; ours is the fd.
            sock = socket.socket(fileno=addr.fd)
            sock.set_inheritable(False)
            if sock.family != socket.AF_UNIX:
                raise OSError(f"{addr} is not a unix socket")
            self._server = await asyncio.start_unix_server(self._handle, sock=sock, limit=limit)
            return str(addr)
        # Bound here rather than by start_server: no resolver thread in the loop.
        family, kind, proto, _, sockaddr = socket.getaddrinfo(
            addr.host, addr.port, type=socket.SOCK_STREAM
        )[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(sockaddr)
        sock.listen(64)
        self._server = await asyncio.start_server(self._handle, sock=sock, limit=limit)
        host, port = sock.getsockname()[:2]
        self.own_port = port
        return str(p.Address("tcp", host=host, port=port))

    def close(self) -> None:
        """Stop accepting connections."""
        if self._server is not None:
            self._server.close()

    def close_connections(self) -> None:
        """Close every open connection and remove the socket file if it is still ours."""
        for writer in list(self._connections):
            writer.close()
        addr = p.parse_address(self._listen)
        if addr.kind != "unix" or self._socket_id is None:
            return
        with contextlib.suppress(OSError):
            st = os.lstat(addr.path)
            if (st.st_dev, st.st_ino) == self._socket_id:  # still ours, not a successor's
                os.unlink(addr.path)

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
                self._reply(writer, self._health())
            elif request["op"] == p.OP_CONFIGURE:
                error = self._configure(request.get("config"), request["secret"])
                self._reply(writer, {"ok": True} if error is None else _refusal(error))
            elif (configured := self.configured) is None:
                self._reply(writer, _refusal("not configured"))
            else:
                await self._serve_configured(configured, request, reader, writer)
        except (ConnectionError, p.ProtocolError):
            pass
        except Exception as exc:
            if self.configured is not None:  # before that there is no log
                message = f"connection handler failed: {type(exc).__name__}: {exc}"
                self.configured.log.write("error", message)
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
        if not isinstance(secret, str) or not hmac.compare_digest(
            hashlib.sha256(secret.encode()).digest(), self._secret_sha256
        ):
            return "unauthorized"
        if request.get("op") not in p.OPS:
            return f"bad request: op must be one of {', '.join(p.OPS)}"
        return request

    @staticmethod
    def _reply(writer: asyncio.StreamWriter, response: dict[str, Any]) -> None:
        if not writer.is_closing():
            writer.write(p.encode_line(response))

    async def _serve_configured(
        self,
        configured: Configured,
        request: dict[str, Any],
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        op = request["op"]
        if op == p.OP_WAIT:
            seconds = request.get("timeout", p.MAX_WAIT)
            if isinstance(seconds, bool) or not isinstance(seconds, int | float):
                self._reply(writer, _refusal("bad request: timeout must be a number"))
                return
            await self._changes.since(request.get("since"), max(0.0, min(seconds, p.MAX_WAIT)))
            self._reply(writer, self._health())
        elif op == p.OP_LOGS:
            lines = _count(request.get("lines"))
            if lines is None:
                self._reply(writer, _refusal("bad request: lines must be a count"))
                return
            records, end = tail_with_cursor(configured.config.log_file, lines)
            self._reply(writer, {"ok": True, "records": records, "cursor": str(end)})
        elif op == p.OP_FOLLOW:
            await self._follow(configured, request, reader, writer)
        elif op == p.OP_EXEC:
            await self._exec(configured, request, reader, writer)
        elif op in p.FILE_OPS:
            config = configured.config
            volume = Volume(config.volume_root, config.workdir)
            touch = configured.launcher.touch
            await fileserve.serve(volume, touch, request, reader, writer, self._reply)
        elif op == p.OP_PORTS:
            own = () if self.own_port is None else (self.own_port,)
            ports = await asyncio.to_thread(listening_ports, own)
            self._reply(writer, {"ok": True, "ports": ports})
        elif op == p.OP_CONNECT:
            await self._connect(configured, request, reader, writer)
        else:
            size = (p.clamp_size(request.get("cols")), p.clamp_size(request.get("rows")))
            if op == p.OP_ATTACH:
                await self._attach(configured.supervisor, reader, writer, size)
            else:
                await self._shell(configured, reader, writer, size)

    async def _follow(
        self,
        configured: Configured,
        request: dict[str, Any],
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        """Stream records after ``cursor`` (or the last ``lines``, or from now on) until the
        client closes its end."""
        path = configured.config.log_file
        cursor, lines = request.get("cursor"), request.get("lines")
        if cursor is not None and not _is_cursor(cursor):
            self._reply(writer, _refusal("bad request: cursor must be one the guest gave out"))
            return
        if lines is not None and _count(lines) is None:
            self._reply(writer, _refusal("bad request: lines must be a count"))
            return
        if cursor is not None:
            start = int(cursor)
        elif lines:
            start = offset_before_last(path, lines)
        else:  # from now on: fixed before answering, so nothing written after it is missed
            start = tail_with_cursor(path, 0)[1]
        self._reply(writer, {"ok": True})

        async def stream() -> None:
            records = follow_offsets(path, start=start, poll_interval=FOLLOW_POLL)
            try:
                async for offset, record in records:
                    writer.write(p.encode_line({"cursor": str(offset), "record": record}))
                    await writer.drain()  # a slow client slows its own stream, nobody else
            finally:
                await records.aclose()

        streaming = asyncio.ensure_future(stream())
        closed = asyncio.ensure_future(reader.read())  # the client sends nothing: EOF ends it
        try:
            await asyncio.wait((streaming, closed), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (streaming, closed):
                task.cancel()
            await asyncio.gather(streaming, closed, return_exceptions=True)

    async def _connect(
        self,
        configured: Configured,
        request: dict[str, Any],
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        """Connect to a port inside the instance and pipe bytes until both sides are done."""
        port = valid_port(request.get("port"))
        if port is None:
            self._reply(writer, _refusal("bad request: port must be 1-65535"))
            return
        if port == self.own_port:
            self._reply(writer, _refusal(f"port {port} is the guest's own"))
            return
        try:
            upstream = await open_port(port)
        except OSError as exc:
            self._reply(writer, _refusal(str(exc)))
            return
        configured.launcher.touch()  # preview traffic is activity (auto-stop)
        self._reply(writer, {"ok": True})
        await pipe((reader, writer), upstream, configured.launcher.touch)

    async def _attach(
        self,
        supervisor: Supervisor,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        size: tuple[int | None, int | None],
    ) -> None:
        agent = None
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(ATTACH_WAIT):
                agent = await supervisor.wait_for_agent()
        if agent is None:
            state = supervisor.reported_state()
            error = supervisor.error if state == p.STATE_ERROR else None
            self._reply(writer, {"ok": False, "error": error or f"agent is not running ({state})"})
            return
        if size != (None, None):
            supervisor.resize(*size)
        await self._serve(reader, writer, agent)

    async def _shell(
        self,
        configured: Configured,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        size: tuple[int | None, int | None],
    ) -> None:
        if self.stopping:
            self._reply(writer, {"ok": False, "error": "guest is stopping"})
            return
        config = configured.config
        cols, rows = size[0] or config.cols, size[1] or config.rows
        try:
            session = configured.launcher.start(config.shell, config.env, cols, rows)
        except StartError as exc:
            self._reply(writer, {"ok": False, "error": f"cannot start shell: {exc}"})
            return
        self.shells.add(session)
        try:
            await self._serve(reader, writer, session)
        finally:
            session.hangup(SHELL_KILL_AFTER)  # private shell: it dies with its connection
            await session.wait()
            self.shells.discard(session)

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

    async def _exec(
        self,
        configured: Configured,
        request: dict[str, Any],
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        """Run a command on pipes: stdin from the client's frames, output and the exit back;
        the client closing its end kills the command's tree."""
        parsed = _exec_request(request)
        if isinstance(parsed, str):
            self._reply(writer, _refusal(f"bad request: {parsed}", p.REFUSED_INVALID))
            return
        argv, cwd, env, timeout, max_output = parsed
        if self.stopping:
            self._reply(writer, _refusal("guest is stopping"))
            return
        if len(self.execs) >= p.MAX_EXECS:
            error = f"{p.MAX_EXECS} commands are running already; try again later"
            self._reply(writer, _refusal(error, p.REFUSED_BUSY))
            return

        def send(kind: bytes, data: bytes) -> None:
            if not writer.is_closing():
                for chunk in p.chunks(data):
                    writer.write(p.encode_frame(kind, chunk))

        try:
            execution = configured.launcher.start_exec(
                argv,
                {**configured.config.env, **env},
                cwd=check_cwd(configured.config.workdir, cwd),
                timeout=timeout,
                max_output=max_output,
                send=send,
            )
        except (StartError, ValueError) as exc:
            self._reply(writer, _refusal(f"cannot start: {exc}", p.REFUSED_INVALID))
            return
        self.execs.add(execution)
        try:
            self._reply(writer, {"ok": True, "pid": execution.pid})
            await self._pipe_exec(execution, reader, writer)
        finally:
            if not execution.finished:
                await wait_killed(execution)
            self.execs.discard(execution)
            configured.launcher.touch()

    @staticmethod
    async def _pipe_exec(
        execution: Execution, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        async def feed() -> None:
            while (frame := await p.read_frame(reader)) is not None:
                kind, payload = frame
                if kind == p.FRAME_INPUT:
                    execution.write_stdin(payload)
                elif kind == p.FRAME_CLOSE_STDIN:
                    execution.close_stdin()

        feeding = asyncio.ensure_future(feed())
        ending = asyncio.ensure_future(execution.wait())
        try:
            await asyncio.wait((feeding, ending), return_when=asyncio.FIRST_COMPLETED)
            if ending.done() and not writer.is_closing():
                writer.write(p.encode_exec_exit(ending.result()))
                await writer.drain()
                # Closing with input unread would reset a TCP connection, and the reset may
                # destroy the exit frame before the client reads it: let the client close.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(EXEC_CLOSE_WAIT):
                        await asyncio.wait((feeding,))
            # Otherwise the client went away (or broke the protocol): the caller kills it.
        finally:
            for task in (feeding, ending):
                task.cancel()
            await asyncio.gather(feeding, ending, return_exceptions=True)


def _exec_request(
    request: dict[str, Any],
) -> tuple[list[str], str | None, dict[str, str], float, int] | str:
    """An ``exec`` request's (command, cwd, env, timeout, maxOutput), or what is wrong."""
    command, cwd, env = request.get("command"), request.get("cwd"), request.get("env", {})
    timeout = request.get("timeout", p.DEFAULT_EXEC_TIMEOUT)
    max_output = request.get("maxOutput", p.MAX_EXEC_OUTPUT)
    if not (
        isinstance(command, list)
        and command
        and all(isinstance(a, str) and "\0" not in a for a in command)
        and command[0]
    ):
        return "command must be a non-empty list of strings"
    if cwd is not None and (not isinstance(cwd, str) or "\0" in cwd):
        return "cwd must be a string"
    if not isinstance(env, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and k and "=" not in k and "\0" not in k + v
        for k, v in env.items()
    ):
        return "env must be an object of string values"
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, int | float)
        or not 0 < timeout <= p.MAX_EXEC_TIMEOUT
    ):
        return f"timeout must be a number of seconds up to {p.MAX_EXEC_TIMEOUT:g}"
    if (
        isinstance(max_output, bool)
        or not isinstance(max_output, int)
        or not 0 <= max_output <= p.MAX_EXEC_OUTPUT
    ):
        return f"maxOutput must be a count of bytes up to {p.MAX_EXEC_OUTPUT}"
    return command, cwd, env, float(timeout), max_output


def _refusal(error: str, reason: str | None = None) -> dict[str, Any]:
    if reason is not None:
        return {"ok": False, "error": error, "reason": reason}
    return {"ok": False, "error": error}


def _count(value: object) -> int | None:
    """A number of log lines, capped at MAX_LOG_LINES; None if it is not a count."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return min(value, p.MAX_LOG_LINES)


def _is_cursor(value: object) -> bool:
    # ASCII digits only: str.isdigit() alone takes "²".
    return isinstance(value, str) and value.isascii() and value.isdigit() and len(value) < 20
