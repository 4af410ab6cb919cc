"""``POST /api/instances/{id}/exec`` over real instances: results, streams, limits, refusals."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from gentity.server.auth import SESSION_COOKIE
from gentity.server.db.database import Database
from gentity.server.services.accounts import open_session
from gentity.settings import Settings
from tests.conftest import LiveServer
from tests.server.test_instances import create_shell
from tests.waiting import wait_until_blocking


def run(client: httpx.Client, iid: str, **body: Any) -> dict[str, Any]:
    response = client.post(f"/api/instances/{iid}/exec", json=body, timeout=60)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def sh(client: httpx.Client, iid: str, script: str, **body: Any) -> dict[str, Any]:
    return run(client, iid, command=["sh", "-c", script], **body)


def alive(client: httpx.Client, iid: str, pid: int) -> bool:
    """Whether ``pid`` runs in the instance, asked of the instance itself (its pids are its own
    on a provider with a pid namespace)."""
    return bool(sh(client, iid, f"kill -0 {pid}")["exitCode"] == 0)


def sse_events(response: httpx.Response) -> Iterator[tuple[str, dict[str, Any]]]:
    name = None
    for line in response.iter_lines():
        if line.startswith("event: "):
            name = line.removeprefix("event: ")
        elif line.startswith("data: ") and name is not None:
            yield name, json.loads(line.removeprefix("data: "))
            name = None


def test_result_streams_stdin_env_cwd_and_signal(bearer: httpx.Client) -> None:
    iid = create_shell(bearer)["id"]
    result = sh(
        bearer,
        iid,
        'read line; echo "out:$line:$GREETING"; echo "err" >&2; printf "\\377\\n"; exit 7',
        stdin="hello\n",
        env={"GREETING": "hi there"},
    )
    assert result == {
        "exitCode": 7,
        "signal": None,
        "stdout": "out:hello:hi there\n\ufffd\n",  # invalid UTF-8 is replaced
        "stderr": "err\n",
        "timedOut": False,
        "truncated": False,
        "stdoutTruncated": False,
        "stderrTruncated": False,
    }
    # The agent's working directory by default; relative paths within it; absolute as given.
    workdir = sh(bearer, iid, "pwd")["stdout"].strip()
    assert sh(bearer, iid, "mkdir -p sub/dir")["exitCode"] == 0
    assert sh(bearer, iid, "pwd", cwd="sub/dir")["stdout"] == f"{workdir}/sub/dir\n"
    assert sh(bearer, iid, "pwd", cwd="/")["stdout"] == "/\n"
    killed = sh(bearer, iid, "kill -KILL $$")
    assert (killed["exitCode"], killed["signal"], killed["timedOut"]) == (None, "SIGKILL", False)
    # Beside the agent, not in its terminal: nothing of it shows in the agent's log.
    logs = bearer.get(f"/api/instances/{iid}/logs", params={"lines": 1000}).json()["logs"]
    assert not any("out:hello" in line["message"] for line in logs)


def test_timeout_kills_the_process_tree(bearer: httpx.Client) -> None:
    iid = create_shell(bearer)["id"]
    # The shell ignores SIGTERM and waits on a background sleep: a timeout ends both.
    script = "trap '' TERM; sleep 300 & echo $! $$; wait"
    result = sh(bearer, iid, script, timeout=1)
    assert result["timedOut"] is True and result["signal"] == "SIGKILL"
    assert result["exitCode"] is None
    sleeper, shell = (int(n) for n in result["stdout"].split())
    wait_until_blocking(
        lambda: not alive(bearer, iid, sleeper) and not alive(bearer, iid, shell),
        "the command's processes are gone",
    )


def test_output_is_capped_and_flagged(bearer: httpx.Client) -> None:
    iid = create_shell(bearer)["id"]
    # 3 MiB on stdout: the command finishes (its output keeps being drained past the cap).
    result = sh(bearer, iid, "head -c 3145728 /dev/zero | tr '\\0' a; echo done >&2")
    assert result["exitCode"] == 0 and result["stderr"] == "done\n"
    assert result["stdout"] == "a" * 1024 * 1024
    assert result["truncated"] and result["stdoutTruncated"] and not result["stderrTruncated"]


def test_stream_delivers_events_live_and_in_order(bearer: httpx.Client) -> None:
    iid = create_shell(bearer)["id"]
    script = "echo first; echo warn >&2; while [ ! -e flag ]; do sleep 0.05; done; echo second"
    body = {"command": ["sh", "-c", script], "timeout": 30}
    with bearer.stream("POST", f"/api/instances/{iid}/exec?stream=1", json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = sse_events(response)
        seen = [next(events), next(events)]
        assert sorted(seen) == [("stderr", {"data": "warn\n"}), ("stdout", {"data": "first\n"})]
        # The command is still running (it waits for the flag): the output came live.
        assert sh(bearer, iid, "touch flag")["exitCode"] == 0
        rest = list(events)
    assert rest == [
        ("stdout", {"data": "second\n"}),
        (
            "exit",
            {
                "exitCode": 0,
                "signal": None,
                "timedOut": False,
                "truncated": False,
                "stdoutTruncated": False,
                "stderrTruncated": False,
            },
        ),
    ]


def test_stream_client_disconnect_kills_the_command(bearer: httpx.Client) -> None:
    iid = create_shell(bearer)["id"]
    body = {"command": ["sh", "-c", "sleep 300 & echo $! $$; wait"], "timeout": 600}
    with bearer.stream("POST", f"/api/instances/{iid}/exec?stream=1", json=body) as response:
        events = sse_events(response)  # kept: dropping it would close the response
        name, data = next(events)
        assert name == "stdout"
        pids = [int(n) for n in data["data"].split()]
        assert all(alive(bearer, iid, pid) for pid in pids)
    wait_until_blocking(
        lambda: not any(alive(bearer, iid, pid) for pid in pids), "the command is killed"
    )


def test_one_shot_client_leaving_kills_the_command(bearer: httpx.Client) -> None:
    iid = create_shell(bearer)["id"]
    script = "sleep 300 & echo $! > sleeper; wait"
    with pytest.raises(httpx.ReadTimeout):
        bearer.post(
            f"/api/instances/{iid}/exec",
            json={"command": ["sh", "-c", script], "timeout": 600},
            timeout=httpx.Timeout(30, read=2),
        )
    sleeper = int(sh(bearer, iid, "cat sleeper")["stdout"])
    wait_until_blocking(lambda: not alive(bearer, iid, sleeper), "the command is killed")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "command"),
        ({"command": []}, "command"),
        ({"command": [""]}, "command"),
        ({"command": ["echo", 3]}, "command.1"),
        ({"command": ["echo", "a\x00b"]}, "NUL"),
        ({"command": ["true"], "cwd": "../outside"}, "cwd"),
        ({"command": ["true"], "cwd": "a/../../outside"}, "cwd"),
        ({"command": ["true"], "env": {"A": 1}}, "env"),
        ({"command": ["true"], "env": {"A=B": "x"}}, "env"),
        ({"command": ["true"], "timeout": 0}, "timeout"),
        ({"command": ["true"], "timeout": 3601}, "timeout"),
        ({"command": ["true"], "timeout": True}, "timeout"),
        ({"command": ["true"], "stdin": 5}, "stdin"),
        ({"command": ["true"], "shell": True}, "shell"),
    ],
)
def test_bad_bodies_are_400(bearer: httpx.Client, body: dict[str, Any], message: str) -> None:
    # Validated before the instance is looked up: no instance needed.
    response = bearer.post("/api/instances/nope/exec", json=body)
    assert response.status_code == 400, response.text
    assert message in response.json()["error"]


def test_refusals(bearer: httpx.Client, other_user: httpx.Client) -> None:
    iid = create_shell(bearer)["id"]
    missing = bearer.post(f"/api/instances/{iid}/exec", json={"command": ["no-such-program"]})
    assert missing.status_code == 400
    assert missing.json() == {"error": "cannot start: no-such-program not found"}
    no_dir = bearer.post(f"/api/instances/{iid}/exec", json={"command": ["true"], "cwd": "nope"})
    assert no_dir.status_code == 400 and "not a directory" in no_dir.json()["error"]
    # Someone else's instance is as missing as one that does not exist.
    foreign = other_user.post(f"/api/instances/{iid}/exec", json={"command": ["true"]})
    unknown = bearer.post("/api/instances/c000000000000000000000000/exec", json={"command": ["x"]})
    assert foreign.status_code == unknown.status_code == 404
    assert foreign.json() == unknown.json()
    assert bearer.post(f"/api/instances/{iid}/action", json={"action": "stop"}).status_code == 200
    stopped = bearer.post(f"/api/instances/{iid}/exec", json={"command": ["true"]})
    assert stopped.status_code == 409
    assert stopped.json() == {"error": "the instance is stopped; start it first"}
    streamed = bearer.post(f"/api/instances/{iid}/exec?stream=1", json={"command": ["true"]})
    assert streamed.status_code == 409
    assert (
        bearer.post(f"/api/instances/{iid}/exec?stream=2", json={"command": ["true"]}).status_code
        == 400
    )


def test_a_session_scoped_to_one_instance_runs_commands_there_only(
    server: LiveServer, settings: Settings, bearer: httpx.Client
) -> None:
    """As with its terminal: the full-screen page's session may exec in its own instance."""
    iid = create_shell(bearer)["id"]
    other = create_shell(bearer)["id"]
    user_id = bearer.get("/api/auth/me").json()["id"]

    async def open_scoped() -> str:
        db = Database(settings.resolved_database_url)
        async with db.session() as session:
            opened = await open_session(
                session,
                user_id,
                expires_at=datetime.now(UTC) + timedelta(hours=1),
                user_agent="test",
                address="127.0.0.1",
                scope_instance_id=iid,
            )
        await db.close()
        return opened.secret

    secret = asyncio.run(open_scoped())
    with httpx.Client(base_url=server.url, cookies={SESSION_COOKIE: secret}, timeout=60) as scoped:
        body = {"command": ["echo", "scoped"]}
        assert scoped.post(f"/api/instances/{iid}/exec", json=body).json()["stdout"] == "scoped\n"
        assert scoped.post(f"/api/instances/{other}/exec", json=body).status_code == 401
        stop = scoped.post(f"/api/instances/{iid}/action", json={"action": "stop"})
        assert stop.status_code == 401
