"""``gentity login``, ``logout``, ``whoami``: what is saved, where, and what the server sees."""

from __future__ import annotations

import json
import socket
import stat

import httpx

from tests.cli.conftest import ADMIN_EMAIL, Cli, assert_one_line_error, closed_port
from tests.conftest import PASSWORD, LiveServer


def test_login_saves_a_private_token_and_ends_the_session(
    cli: Cli, server: LiveServer, admin: httpx.Client
) -> None:
    result = cli("login", server.url, "--email", ADMIN_EMAIL, "--password-stdin", stdin=PASSWORD)
    assert result.returncode == 0, result.stderr
    assert f"Logged in to {server.url} as {ADMIN_EMAIL}" in result.stdout
    assert PASSWORD not in result.stdout + result.stderr

    mode = stat.S_IMODE(cli.config_file.stat().st_mode)
    assert mode == 0o600
    assert stat.S_IMODE(cli.config_file.parent.stat().st_mode) == 0o700
    config = cli.config()
    assert config["url"] == server.url
    token = config["token"]
    assert token.startswith("gn_live_")
    assert token not in result.stdout + result.stderr

    # The minted token is named after this machine, and works on its own.
    names = [t["name"] for t in admin.get("/api/tokens").json()["tokens"]]
    assert f"cli@{socket.gethostname()}" in names
    me = httpx.get(f"{server.url}/api/auth/me", headers={"Authorization": f"Bearer {token}"})
    assert me.json()["email"] == ADMIN_EMAIL
    # The password session used to mint it was signed out: only the fixture's own remains.
    sessions = admin.get("/api/auth/sessions").json()["sessions"]
    assert [s["current"] for s in sessions] == [True]

    assert cli.ok("whoami").strip() == f"{ADMIN_EMAIL} (admin) on {server.url}"
    who = cli.json("whoami")
    assert isinstance(who, dict)
    assert who["email"] == ADMIN_EMAIL and who["isAdmin"] is True

    out = cli.ok("logout")
    assert "Logged out" in out
    revoked = httpx.get(f"{server.url}/api/auth/me", headers={"Authorization": f"Bearer {token}"})
    assert revoked.status_code == 401
    assert "token" not in cli.config()
    assert cli.config()["url"] == server.url  # the next `gentity login` defaults to it
    assert cli.ok("logout").strip() == "Not logged in."
    assert_one_line_error(cli("whoami"), "Unauthorized (401)")


def test_login_with_an_existing_token(cli: Cli, server: LiveServer, token: str) -> None:
    # From stdin (scripts)...
    result = cli("login", server.url, "--token", stdin=token + "\n")
    assert result.returncode == 0, result.stderr
    assert cli.config() == {"url": server.url, "token": token}
    assert ADMIN_EMAIL in cli.ok("whoami")
    # ...or from GENTITY_TOKEN; a bad one is refused and not saved.
    bad = cli("login", server.url, "--token", env={"GENTITY_TOKEN": "gn_live_nope"})
    assert_one_line_error(bad, "Unauthorized (401)")
    assert cli.config()["token"] == token
    # --local forgets without revoking.
    assert "forgot" in cli.ok("logout", "--local")
    assert httpx.get(
        f"{server.url}/api/auth/me", headers={"Authorization": f"Bearer {token}"}
    ).is_success


def test_wrong_password_and_no_password_argument(
    cli: Cli, server: LiveServer, admin: httpx.Client
) -> None:
    wrong = cli("login", server.url, "--email", ADMIN_EMAIL, "--password-stdin", stdin="nope\n")
    assert_one_line_error(wrong, "Invalid email or password (401)")
    assert not cli.config_file.exists()
    # Secrets are never options: they would end up in shell history and `ps`.
    assert cli("login", server.url, "--password", PASSWORD).returncode == 2


def test_environment_overrides_the_saved_login(logged_in: Cli, server: LiveServer) -> None:
    # GENTITY_API_URL wins over the saved URL, and the saved token is not sent elsewhere.
    elsewhere = logged_in("whoami", env={"GENTITY_API_URL": "http://127.0.0.1:9"})
    assert_one_line_error(elsewhere, "cannot reach http://127.0.0.1:9: connection refused")
    # GENTITY_TOKEN wins over the saved token.
    bogus = logged_in("whoami", env={"GENTITY_TOKEN": "gn_live_bogus"})
    assert_one_line_error(bogus, "Unauthorized (401)")


def _works(server: LiveServer, token: str) -> bool:
    headers = {"Authorization": f"Bearer {token}"}
    return httpx.get(f"{server.url}/api/auth/me", headers=headers).is_success


def test_login_again_revokes_the_token_it_replaces(logged_in: Cli, server: LiveServer) -> None:
    first = logged_in.config()["token"]
    again = logged_in(
        "login", server.url, "--email", ADMIN_EMAIL, "--password-stdin", stdin=PASSWORD
    )
    assert again.returncode == 0, again.stderr
    second = logged_in.config()["token"]
    assert second != first
    assert not _works(server, first) and _works(server, second)
    assert "Warning" not in again.stderr
    # Saving the same token again revokes nothing.
    same = logged_in("login", server.url, "--token", stdin=second + "\n")
    assert same.returncode == 0, same.stderr
    assert _works(server, second)


def test_a_failed_revoke_is_only_a_warning(cli: Cli, server: LiveServer, token: str) -> None:
    cli.config_file.parent.mkdir(parents=True)
    gone = f"http://127.0.0.1:{closed_port()}"
    cli.config_file.write_text(json.dumps({"url": gone, "token": "gn_live_old"}))
    result = cli("login", server.url, "--token", stdin=token + "\n")
    assert result.returncode == 0, result.stderr
    assert cli.config() == {"url": server.url, "token": token}
    warning = result.stderr.strip().splitlines()[-1]
    assert warning.startswith(f"Warning: could not revoke the previous token on {gone}")
    assert "connection refused" in warning and "gentity tokens revoke" in warning
