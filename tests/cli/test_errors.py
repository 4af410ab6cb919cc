"""Every failure is one line on stderr and a non-zero exit: never a traceback."""

from __future__ import annotations

import httpx

from tests.cli.conftest import Cli, assert_one_line_error, closed_port
from tests.conftest import LiveServer


def test_wrong_url(cli: Cli) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    for args in (
        ["compute", "ls"],
        ["catalog"],
        ["compute", "ssh", "x"],
        ["compute", "logs", "x", "-f"],
    ):
        result = cli(*args, env={"GENTITY_API_URL": url})
        assert_one_line_error(result, f"cannot reach {url}: connection refused")
    assert_one_line_error(cli("login", "ftp://example.com"), "not an http(s) URL")


def test_not_logged_in_and_revoked_token(cli: Cli, server: LiveServer, token: str) -> None:
    env = {"GENTITY_API_URL": server.url}
    assert_one_line_error(cli("compute", "ls", env=env), "Unauthorized (401) - sign in with")
    headers = {"Authorization": f"Bearer {token}"}
    record = httpx.get(f"{server.url}/api/tokens", headers=headers).json()["tokens"][0]
    httpx.delete(f"{server.url}/api/tokens/{record['id']}", headers=headers)
    commands = [["compute", "ls"], ["tokens", "ls"], ["compute", "ssh", "x"]]
    for result in cli.many(commands, env={**env, "GENTITY_TOKEN": token}):
        assert_one_line_error(result, "Unauthorized (401)")


def test_unknown_instance(logged_in: Cli) -> None:
    commands = [
        ["compute", "show", "nope"],
        ["compute", "stop", "nope"],
        ["compute", "start", "nope"],
        ["compute", "restart", "nope"],
        ["compute", "rm", "nope", "-y"],
        ["compute", "logs", "nope"],
        ["compute", "logs", "nope", "-f"],
        ["compute", "ssh", "nope"],
        ["compute", "show", "../tokens"],
        ["compute", "stop", "[/]"],  # in an error line: must not be read as rich markup
    ]
    results = logged_in.many([*commands, ["tokens", "revoke", "nope"]])
    for args, result in zip(commands, results, strict=False):
        assert_one_line_error(result, f'no instance "{args[2]}" (see: gentity compute ls)')
    assert_one_line_error(results[-1], 'no token "nope" (see: gentity tokens ls)')


def test_bad_value_is_the_servers_word(logged_in: Cli, shell_instance: str) -> None:
    bad_lines = logged_in("compute", "logs", shell_instance, "-n", "0")
    assert_one_line_error(bad_lines, "lines: must be a whole number from 1 to 1000 (400)")
