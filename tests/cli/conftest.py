"""Fixtures for running ``gentity`` as a subprocess against the real test server."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import PASSWORD, LiveServer

ADMIN_EMAIL = "admin@example.com"


class Cli:
    """Runs ``python -m gentity.cli`` with its own config directory and no inherited
    ``GENTITY_API_URL``/``GENTITY_TOKEN``, so tests never touch the developer's login."""

    def __init__(self, config_home: Path) -> None:
        self.config_home = config_home
        self.env = {
            k: v for k, v in os.environ.items() if k not in ("GENTITY_API_URL", "GENTITY_TOKEN")
        }
        self.env["XDG_CONFIG_HOME"] = str(config_home)
        self.env["COLUMNS"] = "200"

    @property
    def config_file(self) -> Path:
        return self.config_home / "gentity" / "config.json"

    def config(self) -> dict[str, str]:
        data: dict[str, str] = json.loads(self.config_file.read_text())
        return data

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "gentity.cli", *args]

    def __call__(
        self, *args: str, stdin: str = "", env: dict[str, str] | None = None, timeout: float = 90
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.argv(*args),
            input=stdin,
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def many(
        self, commands: list[list[str]], env: dict[str, str] | None = None
    ) -> list[subprocess.CompletedProcess[str]]:
        """Run independent commands at once: each pays the interpreter's start-up."""
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
            return list(pool.map(lambda args: self(*args, env=env), commands))

    def ok(self, *args: str, stdin: str = "") -> str:
        """Run and insist on success; the stdout."""
        result = self(*args, stdin=stdin)
        assert result.returncode == 0, result.stderr
        assert "Traceback" not in result.stderr
        return result.stdout

    def json(self, *args: str) -> Any:
        """Run with ``--json``; the parsed output."""
        return json.loads(self.ok(*args, "--json"))


def closed_port() -> int:
    """A local port nothing listens on: connecting to it is refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def assert_one_line_error(result: subprocess.CompletedProcess[str], expected: str) -> None:
    """What every failed command must look like: non-zero, one ``Error:`` line, no traceback."""
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: "), result.stderr
    assert expected in lines[0], result.stderr


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return Cli(tmp_path / "config")


@pytest.fixture
def logged_in(cli: Cli, server: LiveServer, admin: httpx.Client) -> Cli:
    """``cli`` after ``gentity login`` as the admin (the ``admin`` fixture made the account)."""
    result = cli("login", server.url, "--email", ADMIN_EMAIL, "--password-stdin", stdin=PASSWORD)
    assert result.returncode == 0, result.stderr
    return cli


@pytest.fixture
def shell_instance(logged_in: Cli, admin: httpx.Client) -> Iterator[str]:
    """A running ``shell`` instance (no API key needed), destroyed afterwards."""
    created = logged_in.json("compute", "create", "--agent", "shell")
    assert isinstance(created, dict)
    instance_id: str = created["id"]
    yield instance_id
    # Instances are real processes that outlive the server: always clean up (by the admin's
    # cookie session, which still works if the test logged the CLI out).
    admin.delete(f"/api/instances/{instance_id}", timeout=60)
