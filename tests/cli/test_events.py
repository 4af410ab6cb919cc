"""``gentity compute events``: the history as a table or JSON, pages, and a follow that prints
live changes and ends when the instance is destroyed."""

from __future__ import annotations

import json
import subprocess
import time

import httpx

from tests.cli.conftest import Cli, assert_one_line_error


def test_history_table_json_and_pages(logged_in: Cli, shell_instance: str) -> None:
    logged_in.ok("compute", "stop", shell_instance)
    page = logged_in.json("compute", "events", shell_instance)
    assert [e["to"] for e in page["events"]] == [
        "stopped",
        "stopping",
        "running",
        "starting",
        "provisioning",
    ]
    assert page["nextBefore"] is None
    assert {e["actor"].split(":")[0] for e in page["events"]} == {"token"}

    # A name or a unique start of the id works as for every other command.
    text = logged_in("compute", "events", shell_instance[:8], "-n", "2")
    assert text.returncode == 0, text.stderr
    header, *rows = text.stdout.strip().splitlines()
    assert header.split() == ["ID", "TIME", "FROM", "TO", "REASON", "BY"]
    assert len(rows) == 2 and "stopping" in rows[0] and "stop requested" in rows[1]
    older = page["events"][1]["id"]
    assert f"--before {older}" in text.stderr

    rest = logged_in.json("compute", "events", shell_instance, "--before", str(older))
    assert [e["to"] for e in rest["events"]] == ["running", "starting", "provisioning"]


def test_unknown_instance_is_one_line(logged_in: Cli) -> None:
    assert_one_line_error(logged_in("compute", "events", "nope"), 'no instance "nope"')


def test_follow_prints_changes_until_destroyed(
    logged_in: Cli, shell_instance: str, admin: httpx.Client
) -> None:
    follower = subprocess.Popen(
        logged_in.argv("compute", "events", shell_instance, "-f", "--json", "-n", "1"),
        env=logged_in.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert follower.stdout is not None
        first = json.loads(follower.stdout.readline())
        assert first["to"] == "running"
        time.sleep(0.2)
        assert admin.delete(f"/api/instances/{shell_instance}", timeout=60).status_code == 200
        out, err = follower.communicate(timeout=30)
    finally:
        if follower.poll() is None:
            follower.kill()
    assert follower.returncode == 0, err
    assert [json.loads(line)["to"] for line in out.splitlines()] == ["destroying", "destroyed"]
    assert f"instance {shell_instance} was destroyed" in err
    # Still readable by its exact id once destroyed.
    history = logged_in.json("compute", "events", shell_instance)
    assert history["events"][0]["to"] == "destroyed"
    assert history["events"][0]["actor"].startswith("session:")
