"""Running a fake machine: its command in a sandbox, its own network, its output.

Each machine gets a network namespace of its own with slirp4netns plugged in, so that every
machine can listen on the same ``internal_port`` (8080) as on Fly; each service port is then
forwarded from an ephemeral port on the host's loopback, which is where the edge connects.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from gentity.testing.fakefly.sandbox import Placement, bubblewrap_argv

READY_TIMEOUT = 10.0
EXEC_MARKER = "fakefly-exec-4f1c2e"


class LaunchError(Exception):
    """The machine could not be started; the message says why."""


@dataclass
class Launch:
    """Everything needed to start one machine's process."""

    hostname: str
    command: list[str]
    env: dict[str, str]
    placements: list[Placement]
    ports: list[int]
    """Service ``internal_port``s to forward from the host."""
    workdir: Path
    """The machine's own directory in the fake's state (slirp4netns's output)."""
    on_output: Callable[[str], None]


@dataclass
class Sandbox:
    """A started machine process: the bubblewrap monitor, its namespace's init, slirp4netns."""

    process: asyncio.subprocess.Process
    init_pid: int
    forwarded: dict[int, int] = field(default_factory=dict)
    """internal_port -> host loopback port."""
    readers: list[asyncio.Task[None]] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    """The environment the machine's command got (``exec`` gets it too)."""
    paused: bool = False

    def main_pid(self) -> int | None:
        """Host pid of the machine's main command: the only child of the namespace's init."""
        try:
            children = Path(f"/proc/{self.init_pid}/task/{self.init_pid}/children").read_text()
        except OSError:
            return None
        pids = children.split()
        return int(pids[0]) if pids else None

    def signal(self, signum: int) -> None:
        """Deliver ``signum`` to the main command, as Fly's init does on stop."""
        pid = self.main_pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    def kill(self) -> None:
        """SIGKILL the namespace's init: the kernel then kills everything in the namespace."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.init_pid, signal.SIGKILL)

    def pause(self, paused: bool) -> None:
        """Freeze or thaw every process of the machine (the fake's suspend)."""
        self.paused = paused
        signum = signal.SIGSTOP if paused else signal.SIGCONT
        for pid in self._namespace_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    def _namespace_pids(self) -> list[int]:
        try:
            namespace = os.readlink(f"/proc/{self.init_pid}/ns/pid")
        except OSError:
            return []
        pids = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == self.init_pid:
                continue
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/{entry}/ns/pid") == namespace:
                    pids.append(int(entry))
        return pids

    async def wait(self) -> int:
        """The main command's exit code (128 + signal if killed by one), once its output is read."""
        code = await self.process.wait()
        for reader in self.readers:
            await reader
        return 128 - code if code < 0 else code


def exec_reporting(fd: int, command: list[str]) -> list[str]:
    """``command`` preceded by a bash step that writes to ``fd``, closes it, prints the exec
    marker and execs the command (same pid). bubblewrap can fail setting up the sandbox after
    it reported it, so this byte is what tells that the machine's command really started."""
    script = f'printf 1 >&{fd}; exec {fd}>&-; echo {EXEC_MARKER}; exec "$@"'
    return ["bash", "-c", script, "fly-init", *command]


async def _read_info(info_read: int) -> int:
    loop = asyncio.get_running_loop()
    data = b""
    while True:
        chunk = await loop.run_in_executor(None, os.read, info_read, 4096)
        if not chunk:
            raise LaunchError("the sandbox exited before it started")
        data += chunk
        with contextlib.suppress(ValueError, KeyError, TypeError):
            return int(json.loads(data)["child-pid"])


async def _pump(
    stream: asyncio.StreamReader, on_output: Callable[[str], None], setup: list[str]
) -> None:
    """Lines before the exec marker are bubblewrap's (kept in ``setup``); the rest are the
    machine's."""
    running = False
    while line := await stream.readline():
        text = line.decode(errors="replace").rstrip("\n")
        if running:
            on_output(text)
        elif text == EXEC_MARKER:
            running = True
        else:
            setup.append(text)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def _slirp_call(api_socket: str, request: dict[str, object]) -> dict[str, object]:
    reader, writer = await asyncio.open_unix_connection(api_socket)
    try:
        writer.write(json.dumps(request).encode())
        await writer.drain()
        writer.write_eof()
        reply: dict[str, object] = json.loads(await reader.read())
        return reply
    finally:
        writer.close()


async def _forward(api_socket: str, guest_port: int) -> int:
    """Forward an ephemeral host loopback port to ``guest_port`` in the machine."""
    for _ in range(5):
        host_port = _free_port()
        arguments = {
            "proto": "tcp",
            "host_addr": "127.0.0.1",
            "host_port": host_port,
            "guest_port": guest_port,
        }
        reply = await _slirp_call(api_socket, {"execute": "add_hostfwd", "arguments": arguments})
        if "error" not in reply:
            return host_port
    raise LaunchError(f"could not forward port {guest_port}: {reply['error']}")


def _loopback_up(init_pid: int) -> bool:
    """Whether the sandbox's ``lo`` is up: its broadcast route exists only then (a /proc read,
    which does not block)."""
    try:
        return "127.255.255.255" in Path(f"/proc/{init_pid}/net/fib_trie").read_text()
    except OSError:
        raise LaunchError("the sandbox exited while setting up its network") from None


async def _loopback_ready(init_pid: int) -> None:
    """Return once bubblewrap has brought up the sandbox's loopback.

    bubblewrap configures ``lo`` over netlink after it reported the sandbox; slirp4netns
    configuring ``tap0`` at the same moment makes bubblewrap read the other's netlink answers
    and fail, so slirp4netns waits for bubblewrap's last step.
    """
    # Polled: the kernel offers no notification for another namespace's routes.
    while True:
        if _loopback_up(init_pid):
            return
        await asyncio.sleep(0.01)


async def _start_network(
    init_pid: int, exit_fd: int, api_socket: str, output: Path
) -> asyncio.subprocess.Process:
    ready_read, ready_write = os.pipe()
    try:
        with output.open("ab") as out:
            slirp = await asyncio.create_subprocess_exec(
                "slirp4netns",
                "--configure",
                "--disable-host-loopback",
                f"--api-socket={api_socket}",
                f"--exit-fd={exit_fd}",
                f"--ready-fd={ready_write}",
                str(init_pid),
                "tap0",
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
                pass_fds=(exit_fd, ready_write),
            )
        os.close(ready_write)
        ready_write = -1
        loop = asyncio.get_running_loop()
        ready = loop.run_in_executor(None, os.read, ready_read, 1)
        if await asyncio.wait_for(ready, READY_TIMEOUT) != b"1":
            raise LaunchError("the machine's network did not come up")
        return slirp
    finally:
        os.close(ready_read)
        if ready_write >= 0:
            os.close(ready_write)


async def start(launch: Launch) -> Sandbox:
    """Start the machine: sandbox held at the gate, network and forwards set, then released."""
    info_read, info_write = os.pipe()
    block_read, block_write = os.pipe()
    exit_read, exit_write = os.pipe()  # slirp4netns exits when the sandbox closes exit_write
    ran_read, ran_write = os.pipe()
    api_socket = os.path.join(tempfile.gettempdir(), f"fakefly-{launch.hostname}.sock")
    argv = bubblewrap_argv(launch.hostname, launch.placements, info_write, block_read, [])
    argv += exec_reporting(ran_write, launch.command)
    try:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            # One pipe for both, so lines keep the order they were written in.
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=launch.env,
            pass_fds=(info_write, block_read, exit_write, ran_write),
        )
    except OSError as exc:
        for fd in (info_read, info_write, block_read, block_write, exit_read, exit_write):
            os.close(fd)
        os.close(ran_read)
        os.close(ran_write)
        raise LaunchError(f"could not run bwrap: {exc}") from exc
    for fd in (info_write, block_read, exit_write, ran_write):
        os.close(fd)
    assert process.stdout is not None
    setup: list[str] = []
    readers = [asyncio.create_task(_pump(process.stdout, launch.on_output, setup))]
    sandbox: Sandbox | None = None
    try:
        init_pid = await asyncio.wait_for(_read_info(info_read), READY_TIMEOUT)
        sandbox = Sandbox(process=process, init_pid=init_pid, readers=readers, env=launch.env)
        await asyncio.wait_for(_loopback_ready(init_pid), READY_TIMEOUT)
        slirp = await _start_network(init_pid, exit_read, api_socket, launch.workdir / "net.log")
        # Reaped in the background; it exits by itself when the sandbox closes its pipe.
        readers.append(asyncio.create_task(_reap(slirp)))
        for port in launch.ports:
            sandbox.forwarded[port] = await _forward(api_socket, port)
        os.write(block_write, b"1")
        loop = asyncio.get_running_loop()
        ran = loop.run_in_executor(None, os.read, ran_read, 1)
        if await asyncio.wait_for(ran, READY_TIMEOUT) != b"1":
            said = setup[-1] if setup else "no output"
            raise LaunchError(f"the sandbox failed before running the command: {said}")
        return sandbox
    except (LaunchError, OSError, TimeoutError) as exc:
        if sandbox is not None:
            sandbox.kill()
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
        raise exc if isinstance(exc, LaunchError) else LaunchError(str(exc)) from exc
    finally:
        for fd in (info_read, block_write, exit_read, ran_read):
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(api_socket)


async def _reap(process: asyncio.subprocess.Process) -> None:
    await process.wait()
