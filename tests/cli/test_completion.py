"""Shell completion asks the server for instance ids, names and agent ids, and never gets in
the way: no error text, no hang, when the server is unreachable, silent or refuses."""

from __future__ import annotations

import socket
import subprocess
import time

from tests.cli.conftest import Cli, closed_port
from tests.conftest import LiveServer


def complete(cli: Cli, line: str, env: dict[str, str] | None = None) -> list[str]:
    """The candidates bash would offer after typing ``line`` and pressing Tab."""
    words = line.split(" ")
    result = cli(
        *(),
        env={
            "_GENTITY_COMPLETE": "complete_bash",
            "COMP_WORDS": line,
            "COMP_CWORD": str(len(words) - 1),
            **(env or {}),
        },
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # nothing may land in the middle of the command being typed
    return [candidate for candidate in result.stdout.splitlines() if candidate]


def test_instance_ids_names_and_agents(logged_in: Cli, shell_instance: str) -> None:
    name = logged_in.json("compute", "show", shell_instance)["name"]
    assert set(complete(logged_in, "gentity compute show ")) == {shell_instance, name}
    assert complete(logged_in, f"gentity compute logs {shell_instance[:4]}") == [shell_instance]
    assert complete(logged_in, f"gentity compute ssh {name[:3]}") == [name]
    assert complete(logged_in, "gentity compute rm nope") == []
    assert complete(logged_in, "gentity compute create --agent cl") == ["claude-code"]


def test_quiet_when_signed_out_or_unreachable(cli: Cli, server: LiveServer) -> None:
    signed_out = {"GENTITY_API_URL": server.url}
    assert complete(cli, "gentity compute show ", signed_out) == []
    # The catalog is public, so agents still complete.
    assert "shell" in complete(cli, "gentity compute create --agent ", signed_out)
    refused = {"GENTITY_API_URL": f"http://127.0.0.1:{closed_port()}"}
    assert complete(cli, "gentity compute show ", refused) == []


def test_a_silent_server_does_not_hang_the_shell(cli: Cli) -> None:
    with socket.socket() as silent:  # accepts connections (backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        started = time.monotonic()
        assert complete(cli, "gentity compute show ", {"GENTITY_API_URL": url}) == []
        assert time.monotonic() - started < 15


def test_the_completion_script_installs(cli: Cli) -> None:
    # `--show-completion` writes the script for the shell it runs under: make it bash, whatever
    # runs the tests (make runs some recipes under sh).
    command = " ".join(cli.argv("--show-completion"))
    shown = subprocess.run(
        ["bash", "-c", f"{command}; exit $?"],
        env=cli.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    assert "_GENTITY_COMPLETE=complete_bash" in shown.stdout
