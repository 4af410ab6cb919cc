"""``gentity compute``: one real ``shell`` instance through its whole life."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess

import httpx
import pytest
from typer.core import TyperGroup
from typer.main import get_command

from gentity.cli.apikeys import api_key_env
from gentity.cli.compute import app as compute_app
from gentity.models import Agent, AgentModel
from tests.cli.conftest import Cli, assert_one_line_error
from tests.conftest import LiveServer
from tests.server.terminal_client import Terminal, ws_url


def test_lifecycle(logged_in: Cli, shell_instance: str) -> None:
    listed = logged_in.json("compute", "ls")
    assert isinstance(listed, dict)
    assert [i["id"] for i in listed["instances"]] == [shell_instance]
    assert shell_instance in logged_in.ok("compute", "ls")

    shown = logged_in.json("compute", "show", shell_instance)
    assert isinstance(shown, dict)
    assert shown["status"] == "running" and shown["agentType"] == "shell"
    assert shown["modelProvider"] == "none" and shown["modelName"] == "bash"
    assert "running" in logged_in.ok("compute", "show", shell_instance)

    # Piped input: the text is typed, the output printed, the remote exit code becomes ours.
    piped = subprocess.run(
        logged_in.argv("compute", "ssh", shell_instance),
        input="echo pi''ped; exit 3\n",
        env=logged_in.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert piped.returncode == 3, piped.stderr
    assert "piped" in piped.stdout
    assert "Traceback" not in piped.stderr

    logs = logged_in.json("compute", "logs", shell_instance, "-n", "50")
    assert isinstance(logs, dict)
    assert logs["logs"] and set(logs["logs"][0]) == {"timestamp", "level", "message"}
    assert "agent started" in logged_in.ok("compute", "logs", shell_instance)
    _follow_then_ctrl_c(logged_in, shell_instance)

    assert "Stopped" in logged_in.ok("compute", "stop", shell_instance)
    assert logged_in.json("compute", "show", shell_instance)["status"] == "stopped"
    assert logged_in.json("compute", "start", shell_instance) == {"ok": True}
    assert logged_in.json("compute", "show", shell_instance)["status"] == "running"
    assert "Restarted" in logged_in.ok("compute", "restart", shell_instance)

    # Without a terminal there is nobody to ask: rm refuses unless told -y.
    refused = logged_in("compute", "rm", shell_instance)
    assert_one_line_error(refused, "pass -y")
    assert "Destroyed" in logged_in.ok("compute", "rm", "-y", shell_instance)
    gone = logged_in("compute", "show", shell_instance)
    assert_one_line_error(gone, f'no instance "{shell_instance}"')


def test_create_needs_a_key_and_never_takes_it_as_an_option(logged_in: Cli) -> None:
    no_key = logged_in("compute", "create", "--agent", "claude-code", env={"ANTHROPIC_API_KEY": ""})
    assert_one_line_error(no_key, "needs an API key: set ANTHROPIC_API_KEY")
    as_option = logged_in("compute", "create", "--agent", "claude-code", "--api-key", "sk-x")
    assert as_option.returncode == 2 and "No such option" in as_option.stderr
    unknown = logged_in("compute", "create", "--agent", "nope")
    assert_one_line_error(unknown, "unknown agent 'nope'")
    bad_model = logged_in("compute", "create", "--agent", "codex", "--model", "nope")
    assert_one_line_error(bad_model, "codex has no model nope; choose from: openai/gpt-5-codex")
    assert logged_in.json("compute", "ls") == {"instances": []}
    group = get_command(compute_app)
    assert isinstance(group, TyperGroup)
    create = group.commands["create"]
    assert not any("key" in (p.name or "") for p in create.params)


def test_create_hands_the_agent_env_without_putting_secrets_on_the_command_line(
    logged_in: Cli, server: LiveServer, admin: httpx.Client
) -> None:
    missing = logged_in("compute", "create", "--agent", "shell", "--env", "GENTITY_TEST_UNSET")
    assert_one_line_error(missing, "--env GENTITY_TEST_UNSET: GENTITY_TEST_UNSET is not set here")
    created = logged_in(
        "compute",
        "create",
        "--agent",
        "shell",
        "--env",
        "PASSED",  # the value comes from this environment, not argv
        "--env",
        "GIVEN=two words",
        "--json",
        env={"PASSED": "from-here"},
    )
    assert created.returncode == 0, created.stderr
    instance_id = json.loads(created.stdout)["id"]
    try:

        async def echo() -> None:
            token = logged_in.config()["token"]
            term = await Terminal.open(ws_url(server.url, instance_id, token))
            await term.send("echo got-$PASSED-$GIVEN\r")
            await term.expect("got-from-here-two words")
            await term.close()

        asyncio.run(echo())
    finally:
        admin.delete(f"/api/instances/{instance_id}", timeout=60)


def test_create_takes_a_restart_policy(logged_in: Cli, admin: httpx.Client) -> None:
    wrong = logged_in("compute", "create", "--agent", "shell", "--restart-policy", "sometimes")
    assert wrong.returncode != 0 and "sometimes" in wrong.stderr
    created = logged_in(
        "compute", "create", "--agent", "shell", "--restart-policy", "never", "--json"
    )
    assert created.returncode == 0, created.stderr
    instance_id = json.loads(created.stdout)["id"]
    try:
        shown = logged_in("compute", "show", instance_id)
        assert re.search(r"Restart policy\s+never", shown.stdout), shown.stdout
        assert admin.get(f"/api/instances/{instance_id}").json()["restartPolicy"] == "never"
    finally:
        admin.delete(f"/api/instances/{instance_id}", timeout=60)


@pytest.mark.parametrize(
    ("provider", "requires", "env"),
    [
        ("anthropic", True, "ANTHROPIC_API_KEY"),
        ("openai", True, "OPENAI_API_KEY"),
        ("google", True, "GEMINI_API_KEY"),
        ("none", False, None),
        ("mistral", True, "MISTRAL_API_KEY"),  # unknown here: the usual convention
    ],
)
def test_api_key_variable(provider: str, requires: bool, env: str | None) -> None:
    model = AgentModel(provider=provider, name="m", label="M")
    agent = Agent(
        id="a",
        name="A",
        description="",
        default_cpus=1,
        default_memory_mb=512,
        default_volume_gb=1,
        models=[model],
        requires_api_key=requires,
    )
    assert api_key_env(agent, model) == env


def _follow_then_ctrl_c(logged_in: Cli, shell_instance: str) -> None:
    """``compute logs -f`` prints the history, then follows; Ctrl-C ends it quietly."""
    history = logged_in.json("compute", "logs", shell_instance, "-n", "5")["logs"]
    assert history
    proc = subprocess.Popen(
        logged_in.argv("compute", "logs", shell_instance, "-f", "-n", "5", "--json"),
        env=logged_in.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    # History first, one JSON object per line; once it is all out, the CLI waits for more.
    for _ in history:
        assert set(json.loads(proc.stdout.readline())) == {"timestamp", "level", "message"}
    proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert "Traceback" not in err
