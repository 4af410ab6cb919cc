"""Agent health in ``compute ls``/``show``, and ``ssh`` to an agent that is down."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.cli.conftest import Cli
from tests.json_body import json_object


def wait_show(cli: Cli, iid: str, check: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while True:
        shown = json_object(cli.json("compute", "show", iid))
        if shown["agent"] is not None and check(shown["agent"]):
            return shown
        assert time.monotonic() < deadline, shown
        time.sleep(0.3)


# Health comes from the guest, not the database: once, on SQLite, is enough for this slow one.
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_health_shown_and_ssh_to_a_crashing_agent(logged_in: Cli, shell_instance: str) -> None:
    wait_show(logged_in, shell_instance, lambda a: a["state"] == "ready")
    assert "ready" in logged_in.ok("compute", "ls")
    shown = logged_in.ok("compute", "show", shell_instance)
    assert "Agent state" in shown and "ready" in shown and "Ready since" in shown

    # From now on the agent's login shell exits 3 at once: it crashes and backs off longer
    # each time, until the back-off outlasts the wait of an attach.
    piped = subprocess.run(
        logged_in.argv("compute", "ssh", shell_instance),
        input="echo 'exit 3' >> ~/.bash_profile; exit 3\n",
        env=logged_in.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert piped.returncode == 3, piped.stderr
    wait_show(logged_in, shell_instance, lambda a: a["state"] == "backoff" and a["restarts"] >= 5)
    assert "backoff (5 restarts)" in logged_in.ok("compute", "ls")
    shown = logged_in.ok("compute", "show", shell_instance)
    assert "code 3" in shown

    refused = logged_in("compute", "ssh", shell_instance)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    lines = refused.stderr.strip().splitlines()
    assert lines[0].startswith("Error: the agent keeps exiting"), refused.stderr
    assert "last exit code 3" in lines[0] and "unix:" not in refused.stderr
    assert f"gentity compute ssh --shell {shell_instance}" in refused.stderr
