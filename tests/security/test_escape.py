"""Escape attempts from inside a real instance, typed into its terminal as an attacker would.

The server runs as root here and on CI, which is the case that matters: everything an
instance can reach, it reaches with whatever the sandbox left it. Each test names the attack
and asserts that it fails, and that the host and the other instances are unchanged.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import secrets
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from gentity.settings import Settings
from tests.conftest import LiveServer, require
from tests.server.terminal_client import Terminal, ws_url
from tests.server.test_instances import create_shell, instance_dir


@pytest.fixture(autouse=True)
def _sandbox_required() -> None:
    require(os.geteuid() == 0, "the escape suite runs as root, like the server on CI")
    require(shutil.which("bwrap") is not None, "bubblewrap is installed")
    require(shutil.which("slirp4netns") is not None, "slirp4netns is installed")


@pytest.fixture
def database_url(tmp_path: Path) -> Iterator[str]:
    # What is attacked here is the host, not the database: SQLite is enough.
    yield f"sqlite:///{tmp_path / 'gentity.db'}"


_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\r")


class Shell:
    """The agent's terminal of one instance, driven like a person at a keyboard."""

    def __init__(self, terminal: Terminal) -> None:
        self.terminal = terminal

    @classmethod
    async def open(cls, base: str, instance_id: str, token: str, extra: str = "") -> Shell:
        shell = cls(await Terminal.open(ws_url(base, instance_id, token, extra)))
        await shell.run("stty -echo; bind 'set enable-bracketed-paste off'; export PS1=''")
        return shell

    async def run(self, command: str, timeout: float = 30) -> tuple[int, str]:
        """Run ``command``; its exit status and what it printed."""
        marker = secrets.token_hex(4)
        start = len(self.terminal.output)
        separator = " " if command.rstrip().endswith("&") else "; "
        await self.terminal.send(f"{command}{separator}echo __{marker}_$?__\r")
        pattern = re.compile(rf"__{marker}_(\d+)__")
        async with asyncio.timeout(timeout):
            while (found := pattern.search(self.terminal.output, start)) is None:
                message = json.loads(await self.terminal.ws.recv())
                if message["type"] != "output":
                    raise AssertionError(f"the session ended: {self.terminal.output[start:]!r}")
                self.terminal.output += message["data"]
        return int(found.group(1)), _ANSI.sub("", self.terminal.output[start : found.start()])

    async def close(self) -> None:
        await self.terminal.close()


def attack(
    server: LiveServer, instance_id: str, token: str, commands: list[str]
) -> list[tuple[int, str]]:
    """Run ``commands`` in the instance's terminal; their (status, output) pairs."""

    async def scenario() -> list[tuple[int, str]]:
        shell = await Shell.open(server.url, instance_id, token)
        try:
            return [await shell.run(c) for c in commands]
        finally:
            await shell.close()

    return asyncio.run(scenario())


def test_no_capabilities_no_new_privileges_seccomp_and_an_unprivileged_host_uid(
    server: LiveServer, bearer: httpx.Client, token: str, settings: Settings
) -> None:
    iid = create_shell(bearer)["id"]
    (_, status), (_, uid_map) = attack(
        server, iid, token, ["cat /proc/self/status", "cat /proc/self/uid_map"]
    )
    fields = dict(re.findall(r"^(\w+):\s*(\S+)", status, re.MULTILINE))
    assert fields["CapEff"] == "0000000000000000"
    assert fields["CapBnd"] == "0000000000000000"
    assert fields["NoNewPrivs"] == "1"
    assert fields["Seccomp"] == "2"  # a filter is installed
    inside, outside, count = uid_map.split()[:3]
    assert (inside, count) == ("0", "1")
    assert int(outside) != 0
    assert int(outside) == int((instance_dir(settings, iid) / "uid").read_text())
    # Its files on the host belong to that uid, not to root.
    attack(server, iid, token, ["echo mine > /home/agent/mine.txt"])
    volume = instance_dir(settings, iid) / "disk" / "home"
    assert (volume / "mine.txt").stat().st_uid == int(outside)


def test_mounts_cannot_be_undone_and_the_data_directory_stays_hidden(
    server: LiveServer, bearer: httpx.Client, token: str, settings: Settings
) -> None:
    iid = create_shell(bearer)["id"]
    data = settings.data_dir
    canary = Path(f"/etc/gentity-escape-canary-{secrets.token_hex(4)}")
    attempts = [
        "umount -l /tmp",
        f"cat {data}/secret.key",
        f"ls {data}/gentity.db",
        "mount -o remount,bind,rw /",
        f"echo pwned > {canary}",
        "mount -t tmpfs none /mnt",
        "unshare -Ur true",
        "unshare -m true",
    ]
    try:
        results = attack(server, iid, token, attempts)
    finally:
        planted = canary.exists()
        canary.unlink(missing_ok=True)  # never leave a successful attack's file on the host
    assert not planted
    for command, (code, output) in zip(attempts, results, strict=True):
        assert code != 0, f"{command!r} succeeded: {output!r}"
    key = (data / "secret.key").read_bytes()
    assert base64.b64encode(key)[:16].decode() not in "".join(o for _, o in results)


def test_other_instances_cgroups_and_host_processes_are_out_of_sight(
    server: LiveServer, bearer: httpx.Client, token: str, settings: Settings
) -> None:
    attacker = create_shell(bearer)["id"]
    victim = create_shell(bearer)["id"]
    provider = server.app.state.ctx.providers.default
    victim_socket = provider.runtime_dir / victim / "guest.sock"
    assert victim_socket.exists()
    connect = (
        'python3 -c "import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])"'
    )
    results = attack(
        server,
        attacker,
        token,
        [
            f"{connect} {victim_socket}",
            f"ls {provider.runtime_dir}",
            f"ls {instance_dir(settings, victim)}",
            "ls -A /sys/fs/cgroup | wc -l",
            f"echo 1 > /sys/fs/cgroup/unified/gentity/{victim}/cgroup.kill",
            "ls -d /proc/[0-9]* | wc -l",
            "grep -l 'postgre[s]:' /proc/[0-9]*/cmdline | wc -l",
        ],
    )
    assert [code != 0 for code, _ in results[:3]] == [True, True, True]
    assert results[3][1].strip() == "0"  # no cgroup of anyone's
    assert results[4][0] != 0
    # Host processes are out of sight: a handful of the instance's own, no PostgreSQL.
    assert int(results[5][1].strip()) < 30
    assert results[6][1].strip() == "0"
    assert bearer.get(f"/api/instances/{victim}").json()["status"] == "running"


def test_own_network_no_host_loopback(server: LiveServer, bearer: httpx.Client, token: str) -> None:
    iid = create_shell(bearer)["id"]
    probe = (
        'python3 -c "import socket,sys; socket.create_connection((sys.argv[1], int(sys.argv[2])),'
        ' timeout=3)"'
    )
    results = attack(
        server,
        iid,
        token,
        [
            f"{probe} 127.0.0.1 {server.port}",  # the control plane
            f"{probe} 10.0.2.2 {server.port}",  # the host through the user-mode network
            f"{probe} 127.0.0.1 5432",  # PostgreSQL
            "ip -o route show default",
        ],
    )
    for code, output in results[:3]:
        assert code != 0, output
    assert "tap0" in results[3][1]


def test_an_instance_listener_cannot_stand_in_for_a_host_port(
    server: LiveServer, bearer: httpx.Client, token: str
) -> None:
    # A listener on the instance's loopback must not be the host's 127.0.0.1:<port>, where a
    # browser would hand it the dashboard's cookie.
    port = _free_port()
    iid = create_shell(bearer)["id"]

    async def scenario() -> None:
        shell = await Shell.open(server.url, iid, token)
        await shell.run(f"python3 -m http.server {port} --bind 127.0.0.1 >/dev/null 2>&1 &")
        fetch = f"import urllib.request as u; u.urlopen('http://127.0.0.1:{port}/', timeout=3)"
        code, _ = await shell.run(f'sleep 0.5; python3 -c "{fetch}"')
        assert code == 0  # it listens, inside
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
        await shell.close()

    asyncio.run(scenario())


def test_guest_output_never_reaches_the_error_message(
    server: LiveServer, bearer: httpx.Client, token: str, settings: Settings, tmp_path: Path
) -> None:
    # Left down once its guest dies (the default policy would start it again by itself).
    iid = create_shell(bearer, restartPolicy="never")["id"]
    key_file = settings.data_dir / "secret.key"
    outside = tmp_path / "planted-by-the-instance"
    attack(
        server,
        iid,
        token,
        [
            f"ln -sf {key_file} /run/gentity/logs/guest.out",
            f"ln -sf {outside} /run/gentity/logs/install.log",
            "echo 'secret-looking line /etc/shadow' >&2",
        ],
    )

    async def kill_the_guest() -> None:
        terminal = await Terminal.open(ws_url(server.url, iid, token))
        await terminal.send("pkill -9 -f gentity.guest\r")
        # The guest takes this very connection down: it may end without an exit frame.
        with contextlib.suppress(ConnectionClosed, TimeoutError):
            await terminal.wait_exit(timeout=10)

    asyncio.run(kill_the_guest())
    deadline = time.monotonic() + 20
    while (row := bearer.get(f"/api/instances/{iid}").json())["status"] == "running":
        assert time.monotonic() < deadline, row
        time.sleep(0.2)
    message = row.get("errorMessage") or ""
    key_text = key_file.read_text().strip()
    assert key_text[:12] not in message
    assert str(settings.data_dir) not in message and "/tmp" not in message
    # Starting it again writes nothing through the planted links.
    bearer.post(f"/api/instances/{iid}/action", json={"action": "stop"})
    response = bearer.post(f"/api/instances/{iid}/action", json={"action": "start"})
    assert response.status_code == 200, response.text
    assert key_file.read_text().strip() == key_text
    assert not outside.exists()


def test_log_symlinks_and_fifos_neither_leak_nor_block(
    server: LiveServer, bearer: httpx.Client, token: str, settings: Settings, tmp_path: Path
) -> None:
    secret_file = tmp_path / "host-secret.log"
    line = {"timestamp": "2026-01-01T00:00:00.000Z", "level": "info", "message": "HOST-SECRET"}
    secret_file.write_text(json.dumps(line) + "\n")
    iid = create_shell(bearer)["id"]
    attack(server, iid, token, [f"ln -sf {secret_file} /run/gentity/logs/agent.log"])
    tail = bearer.get(f"/api/instances/{iid}/logs?lines=50")
    assert tail.status_code == 200
    assert "HOST-SECRET" not in tail.text

    log = "/run/gentity/logs/agent.log"
    attack(server, iid, token, [f"rm -f {log}", f"mkfifo {log}"])

    async def scenario() -> None:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
            headers = {"Authorization": f"Bearer {token}"}
            follow = asyncio.create_task(
                http.get(f"/api/instances/{iid}/logs?follow=1", headers=headers, timeout=3)
            )
            tails = [
                asyncio.create_task(http.get(f"/api/instances/{iid}/logs?lines=5", headers=headers))
                for _ in range(3)
            ]
            # Time for the requests to reach the server and block on the FIFO, if they would;
            # from the outside a blocked request and a slow one look alike.
            await asyncio.sleep(0.5)
            started = time.monotonic()
            health = await http.get("/healthz", timeout=3)
            assert health.status_code == 200
            assert time.monotonic() - started < 2
            for task in tails:
                assert (await task).status_code == 200
            follow.cancel()

    asyncio.run(scenario())


def test_a_fork_bomb_stays_in_its_instance_and_the_guest_survives(
    server: LiveServer, bearer: httpx.Client, token: str
) -> None:
    iid = create_shell(bearer)["id"]
    # Threads count against the process limit like forks, at a fraction of the memory.
    bomb = (
        'python3 -c "import threading,time\n'
        "threading.stack_size(65536)\nn=0\n"
        "try:\n while True:\n"
        "  threading.Thread(target=time.sleep, args=(120,), daemon=True).start(); n+=1\n"
        "except RuntimeError: print('LIMIT', n)\ntime.sleep(120)\" &"
    )

    async def scenario() -> None:
        shell = await Shell.open(server.url, iid, token)
        await shell.run(bomb)
        await shell.terminal.expect("LIMIT", timeout=60)
        # The guest still answers: a new shell opens and works while the bomb holds (with
        # builtins only: the instance has no process to spare, which is the point).
        other = await Terminal.open(ws_url(server.url, iid, token, "shell=1"))
        await other.send("echo alive-$((6*7))\r")
        await other.expect("alive-42", timeout=30)
        await other.close()
        await shell.close()

    asyncio.run(scenario())
    assert bearer.get(f"/api/instances/{iid}").json()["status"] == "running"


def test_the_volume_has_a_quota(
    server: LiveServer, bearer: httpx.Client, token: str, settings: Settings
) -> None:
    loops = Path("/dev/loop-control").exists() and shutil.which("mkfs.ext4") is not None
    require(loops, "loop devices and mkfs.ext4 for volume quotas")
    iid = create_shell(bearer)["id"]  # the shell agent's volume is 1 GB
    (code, output), (_, df) = attack(
        server,
        iid,
        token,
        ["fallocate -l 1500M /home/agent/big", "df -BM --output=size /home/agent | tail -1"],
    )
    assert code != 0, output
    assert int(df.strip().rstrip("M")) <= 1100
    from gentity.providers.compute.local import volumes

    image = volumes.image_path(instance_dir(settings, iid))
    assert image.stat().st_blocks * 512 <= 1100 * 1024 * 1024


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port
