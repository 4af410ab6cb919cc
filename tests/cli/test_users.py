"""``gentity users create`` against a real database, run as a subprocess."""

import os
import subprocess
import sys
from pathlib import Path

import httpx

from gentity.settings import Settings
from tests.conftest import LiveServer


def run_cli(
    args: list[str], settings: Settings, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "GENTITY_DATA_DIR": str(settings.data_dir),
        "GENTITY_DATABASE_URL": settings.database_url or "",
    }
    return subprocess.run(
        [sys.executable, "-m", "gentity.cli", *args],
        input=stdin,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_create_admin_from_stdin_then_sign_in(
    settings: Settings, server: LiveServer, tmp_path: Path
) -> None:
    result = run_cli(
        ["users", "create", "--admin", "--email", "Boss@Example.com", "--password-stdin"],
        settings,
        stdin="s3cret-passphrase\n",
    )
    assert result.returncode == 0, result.stderr
    assert "Created admin boss@example.com" in result.stdout
    assert "s3cret" not in result.stdout + result.stderr
    with httpx.Client(base_url=server.url) as c:
        login = c.post(
            "/api/auth/login", json={"email": "boss@example.com", "password": "s3cret-passphrase"}
        )
        assert login.status_code == 200
        assert login.json()["isAdmin"] is True


def test_second_account_and_errors(settings: Settings) -> None:
    first = run_cli(
        ["users", "create", "--email", "a@example.com", "--password-stdin"],
        settings,
        "pass-word-1\n",
    )
    assert "Created admin" in first.stdout  # the first account is always an admin
    second = run_cli(
        ["users", "create", "--email", "b@example.com", "--password-stdin"],
        settings,
        "pass-word-2\n",
    )
    assert "Created user b@example.com" in second.stdout
    duplicate = run_cli(
        ["users", "create", "--email", "B@example.com", "--password-stdin"],
        settings,
        "pass-word-3\n",
    )
    assert duplicate.returncode == 1
    assert "already exists" in duplicate.stderr
    assert "Traceback" not in duplicate.stderr
    weak = run_cli(
        ["users", "create", "--email", "c@example.com", "--password-stdin"], settings, "x\n"
    )
    assert weak.returncode == 1
    assert "at least 8" in weak.stderr


def test_password_is_not_an_argument(settings: Settings) -> None:
    result = run_cli(
        ["users", "create", "--email", "a@example.com", "--password", "hunter2hunter2"], settings
    )
    assert result.returncode != 0


def test_disable_and_enable_an_account(settings: Settings, server: LiveServer) -> None:
    created = run_cli(
        ["users", "create", "--email", "temp@example.com", "--password-stdin"],
        settings,
        stdin="s3cret-passphrase\n",
    )
    assert created.returncode == 0, created.stderr
    login = {"email": "temp@example.com", "password": "s3cret-passphrase"}
    with httpx.Client(base_url=server.url) as c:
        assert c.post("/api/auth/login", json=login).status_code == 200
        disabled = run_cli(["users", "disable", "--email", "temp@example.com"], settings)
        assert disabled.returncode == 0, disabled.stderr
        assert c.get("/api/auth/me").status_code == 401
        assert c.post("/api/auth/login", json=login).status_code == 401
        enabled = run_cli(["users", "disable", "--enable", "--email", "temp@example.com"], settings)
        assert enabled.returncode == 0, enabled.stderr
        assert c.post("/api/auth/login", json=login).status_code == 200
    missing = run_cli(["users", "disable", "--email", "nobody@example.com"], settings)
    assert missing.returncode == 1 and "no account" in missing.stderr
