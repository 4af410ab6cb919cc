"""Fixtures for the guest daemon tests: real daemons, real PTYs, no mocks."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import secrets
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from gentity.guest.client import GuestSession, health, open_session
from gentity.guest.protocol import Exit, Output, encode_request, parse_address

BASH = ["bash", "--norc", "--noprofile", "-i"]
# Fields of the test's config that go into the bootstrap; the rest goes to ``configure``.
BOOTSTRAP_FIELDS = ("listen", "hostname", "childCgroupFd", "echoLog")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class GuestProc:
    """A running `python -m gentity.guest` and what the tests need to reach it."""

    proc: subprocess.Popen[bytes]
    config: dict[str, Any]
    address: str
    ready: dict[str, Any]

    @property
    def secret(self) -> str:
        return str(self.config["secret"])

    @property
    def agent_config(self) -> dict[str, Any]:
        """What ``configure`` carries: the config without the secret and the bootstrap."""
        skip = ("secret", *BOOTSTRAP_FIELDS)
        return {k: v for k, v in self.config.items() if k not in skip}

    @property
    def log_path(self) -> Path:
        return Path(self.config["logFile"])

    @property
    def sock_path(self) -> str:
        return str(self.config["listen"]).removeprefix("unix:")

    async def health(self) -> dict[str, Any]:
        return await health(self.address, self.secret)

    async def attach(self, **kwargs: Any) -> Term:
        return Term(await open_session(self.address, self.secret, **kwargs))

    async def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 15.0
    ) -> dict[str, Any]:
        """Poll health until predicate(health) holds."""
        deadline = time.monotonic() + timeout
        while True:
            info = await self.health()
            if predicate(info):
                return info
            if time.monotonic() > deadline:
                raise AssertionError(f"condition not reached; last health: {info}")
            await asyncio.sleep(0.05)

    def log_text(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def stop(self, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise


@dataclass
class Term:
    """A client session plus everything it has received so far."""

    session: GuestSession
    output: bytearray = field(default_factory=bytearray)
    exit: Exit | None = None
    closed: bool = False
    _seen: int = 0  # expect() matches only after the previous match
    _scanned: int = 0  # no match before here (minus an overlap), saves rescanning

    async def send(self, text: str) -> None:
        await self.session.send_input(text.encode())

    async def expect(self, pattern: str | bytes, timeout: float = 10.0) -> re.Match[bytes]:
        """Wait until output received after the last expect() matches the regex."""
        regex = re.compile(pattern.encode() if isinstance(pattern, str) else pattern)
        self._scanned = self._seen
        async with asyncio.timeout(timeout):
            while True:
                match = regex.search(self.output, max(self._seen, self._scanned - 1024))
                if match:
                    self._seen = match.end()
                    return match
                self._scanned = len(self.output)
                if self.closed:
                    raise AssertionError(f"closed before {pattern!r}; output {self.output!r}")
                await self._read_one()

    async def expect_exit(self, timeout: float = 10.0) -> Exit:
        async with asyncio.timeout(timeout):
            while not self.closed:
                await self._read_one()
        assert self.exit is not None, f"closed without an exit frame: {self.output[-500:]!r}"
        return self.exit

    async def _read_one(self) -> None:
        event = await self.session.read()
        if isinstance(event, Output):
            self.output += event.data
        elif isinstance(event, Exit):
            self.exit = event
        else:
            self.closed = True

    async def close(self) -> None:
        await self.session.close()


# What the guest_factory fixture hands a test: keyword overrides of the config,
# wait=False to skip waiting for the "ready" line, configure=False to leave the guest
# waiting for its config.
GuestFactory = Callable[..., GuestProc]


def bootstrap_of(config: dict[str, Any]) -> dict[str, Any]:
    """The bootstrap for a test config: no secret, only its sha256."""
    boot = {k: config[k] for k in BOOTSTRAP_FIELDS if k in config}
    return boot | {"secretSha256": hashlib.sha256(str(config["secret"]).encode()).hexdigest()}


def configure_now(address: str, secret: str, config: dict[str, Any]) -> dict[str, Any]:
    """Send ``configure`` without an event loop (the factory runs inside async tests)."""
    addr = parse_address(address)
    if addr.kind == "unix":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        target: Any = addr.path
    else:
        sock = socket.socket(socket.AF_INET6 if ":" in addr.host else socket.AF_INET)
        target = (addr.host, addr.port)
    with sock:
        sock.settimeout(10)
        sock.connect(target)
        sock.sendall(encode_request(secret, "configure", {"config": config}))
        answer: dict[str, Any] = json.loads(sock.makefile("rb").readline())
        return answer


@pytest.fixture
def guest_factory(tmp_path: Path) -> Iterator[GuestFactory]:
    """Start guests with a default bash config; keyword overrides replace fields."""
    started: list[GuestProc] = []
    # Unix socket paths are limited to ~107 bytes: keep them out of tmp_path.
    sock_dir = tempfile.mkdtemp(prefix="gg-", dir="/tmp")
    counter = iter(range(1000))

    def start(wait: bool = True, configure: bool = True, **overrides: Any) -> GuestProc:
        n = next(counter)
        config: dict[str, Any] = {
            "secret": secrets.token_hex(16),
            "listen": f"unix:{sock_dir}/guest{n}.sock",
            "logFile": str(tmp_path / f"logs{n}" / "agent.log"),
            "workdir": str(tmp_path / "volume"),
            "command": BASH,
            "shell": BASH,
            "env": {"PS1": "$ ", "TERM": "xterm-256color", "HOME": str(tmp_path)},
            "restart": "always",
            "replayBytes": 65536,
            "cols": 80,
            "rows": 24,
        }
        config.update(overrides)
        proc = subprocess.Popen(
            [sys.executable, "-m", "gentity.guest"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            bufsize=0,  # unbuffered: select() below must see every line still unread
        )
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(json.dumps(bootstrap_of(config)).encode())
        proc.stdin.close()
        ready: dict[str, Any] = {}
        while wait and "ready" not in ready:  # the first line says it waits for its bootstrap
            readable, _, _ = select.select([proc.stdout], [], [], 15)
            line = proc.stdout.readline() if readable else b""
            if not line:
                proc.kill()
                _, err = proc.communicate()
                raise AssertionError(f"guest did not start: {err.decode()}")
            ready = json.loads(line)
        guest = GuestProc(proc, config, ready.get("listen", config["listen"]), ready)
        started.append(guest)
        if wait and configure:
            answer = configure_now(guest.address, guest.secret, guest.agent_config)
            assert answer == {"ok": True}, answer
        return guest

    yield start
    for guest in started:
        if guest.proc.poll() is None:
            guest.stop()
        for stream in (guest.proc.stdout, guest.proc.stderr):
            if stream is not None:
                stream.close()
    shutil.rmtree(sock_dir, ignore_errors=True)


def proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, pgrp, session) of a process, or None if it is gone."""
    try:
        data = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    fields = data[data.rindex(b")") + 2 :].split()
    return fields[0].decode(), int(fields[2]), int(fields[3])


def live_members(sid: int) -> list[int]:
    """Non-zombie processes whose process group or session is ``sid``."""
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            stat = proc_stat(int(name))
            if stat and stat[0] != "Z" and sid in (stat[1], stat[2]):
                found.append(int(name))
    return found


def pid_alive(pid: int) -> bool:
    stat = proc_stat(pid)
    return stat is not None and stat[0] != "Z"
