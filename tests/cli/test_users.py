"""``gentity users create`` against a real database, run as a subprocess."""

import os
import shlex
import subprocess
import sys
from pathlib import Path

import httpx

from gentity.settings import Settings
from tests.cli.conftest import closed_port
from tests.conftest import LiveServer
from tests.waiting import wait_until_blocking


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
        ["users", "create", "--email", "a@example.com", "--password-stdin", "--create-database"],
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


def _server_free_env(**extra: str) -> dict[str, str]:
    """This process's environment without any database settings, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GENTITY_")}
    return {**env, **extra}


def _gentity(
    args: list[str], env: dict[str, str], stdin: str = "s3cret-passphrase\n"
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gentity.cli", *args],
        input=stdin,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_create_refuses_a_data_directory_without_a_database(tmp_path: Path) -> None:
    # No GENTITY_DATA_DIR: the default directory is used, and said; it has no database.
    env = _server_free_env(XDG_DATA_HOME=str(tmp_path / "xdg"))
    args = ["users", "create", "--email", "a@example.com", "--password-stdin"]
    refused = _gentity(args, env)
    default_dir = tmp_path / "xdg" / "gentity"
    assert refused.returncode == 1
    assert f"Data directory: {default_dir}" in refused.stderr
    assert f"no database at {default_dir / 'gentity.db'}" in refused.stderr
    assert "--create-database" in refused.stderr and "Traceback" not in refused.stderr
    assert not (default_dir / "gentity.db").exists()
    disable = _gentity(["users", "disable", "--email", "a@example.com"], env)
    assert disable.returncode == 1 and "no database at" in disable.stderr
    # Asked for explicitly, a new database is started there.
    created = _gentity([*args, "--create-database"], env)
    assert created.returncode == 0, created.stderr
    assert "Created admin a@example.com" in created.stdout
    assert (default_dir / "gentity.db").exists()


def test_the_serve_banner_suggests_a_runnable_command(tmp_path: Path) -> None:
    # The server runs on a data directory of its own; the command runs in a shell without it.
    port = closed_port()
    server_env = _server_free_env(
        GENTITY_DATA_DIR=str(tmp_path / "server-data"), XDG_DATA_HOME=str(tmp_path / "xdg")
    )
    serve = subprocess.Popen(
        [sys.executable, "-m", "gentity.cli", "serve", "--port", str(port)],
        env=server_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert serve.stdout is not None
        banner = [serve.stdout.readline() for _ in range(5)]
        suggested = next(line for line in banner if "gentity users create" in line)
        url = f"http://127.0.0.1:{port}"
        wait_until_blocking(lambda: _answers(url), "the server answers")
        words = shlex.split(suggested)
        program = words.index("gentity")
        env = _server_free_env(XDG_DATA_HOME=str(tmp_path / "xdg"))
        for assignment in words[:program]:
            name, value = assignment.split("=", 1)
            env[name] = value
        created = _gentity([*words[program + 1 :], "--password-stdin"], env)
        assert created.returncode == 0, created.stderr
        login = {"email": "you@example.com", "password": "s3cret-passphrase"}
        assert httpx.post(f"{url}/api/auth/login", json=login).status_code == 200
    finally:
        serve.terminate()
        serve.wait(timeout=30)


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=2).is_success
    except httpx.TransportError:
        return False
