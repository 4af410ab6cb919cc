"""The model API key: encrypted at rest, present only in the agent's environment.

A canary key goes in at create time; then every place it must not be is searched: API
responses, server log records, the guest's log and output, every process's command line and
every other process's environment, and every file under the data directory (the database
holds only ciphertext).
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import httpx
import psycopg
import pytest

from gentity.settings import Settings
from tests.conftest import POSTGRES_DSN
from tests.fake_agents import create_claude, seed_fake_claude
from tests.server.terminal_client import Terminal, ws_url

CANARY = "sk-ant-canary-7f3e9c1d5b"
FAKE_CLAUDE = """#!/bin/sh
# Stands in for the real CLI: proves the key arrived, without ever printing it.
if [ -n "$ANTHROPIC_API_KEY" ]; then echo "key present, model $2"; fi
exec bash --norc -i
"""


@pytest.mark.local_only  # reads the local sandbox's processes and files
def test_canary_key_is_only_in_the_agents_environment(
    bearer: httpx.Client,
    token: str,
    settings: Settings,
    database_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    seed_fake_claude(settings, FAKE_CLAUDE)
    created = create_claude(bearer, CANARY)
    assert created.status_code == 200, created.text
    iid = created.json()["id"]
    responses = [created.text]
    responses.append(bearer.get("/api/instances").text)
    responses.append(bearer.get(f"/api/instances/{iid}").text)

    async def look() -> str:
        term = await Terminal.open(ws_url(str(bearer.base_url), iid, token))
        await term.send("echo looked-$((2*3))\r")
        return await term.expect("looked-6")

    terminal_output = asyncio.run(look())
    assert "key present, model claude-sonnet-4-5" in terminal_output
    responses.append(bearer.get(f"/api/instances/{iid}/logs", params={"lines": 1000}).text)
    for text in responses:
        assert CANARY not in text

    # Processes: the agent (bash, exec'd from the fake claude) has it in its environment;
    # nobody has it on a command line, and no process other than the agent's has it.
    holders = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        assert CANARY.encode() not in cmdline, cmdline
        if CANARY.encode() in environ:
            holders.append(cmdline.split(b"\0")[0])
    assert holders, "the agent did not get the key"
    assert all(h in (b"bash", b"/bin/sh", b"sh") for h in holders), holders

    # Files: nothing under the data directory holds it in plain text.
    for path in settings.data_dir.rglob("*"):
        if path.is_file() and not path.is_symlink():
            assert CANARY.encode() not in path.read_bytes(), path
    if database_url.startswith("postgres"):
        schema = database_url.rsplit("%3D", 1)[1]
        with psycopg.connect(POSTGRES_DSN) as conn:
            rows = conn.execute(f'SELECT * FROM "{schema}".instances').fetchall()
        assert rows and CANARY not in repr(rows)
    # The runtime directory (the guest's socket) holds nothing either.
    for path in Path(f"/tmp/gentity-{os.getuid()}").rglob("*"):
        if path.is_file():
            assert CANARY.encode() not in path.read_bytes(), path

    # Server logs.
    for record in caplog.records:
        assert CANARY not in record.getMessage()

    assert bearer.delete(f"/api/instances/{iid}").status_code == 200


@pytest.mark.local_only  # installs into the local provider's shared cache
def test_install_failure_is_an_error_with_a_reason(
    bearer: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Point npm at a port where nothing listens: the install fails fast and for real.
    monkeypatch.setenv("npm_config_registry", "http://127.0.0.1:9/")
    monkeypatch.setenv("npm_config_fetch_retries", "0")
    body = {
        "agentType": "codex",
        "modelProvider": "openai",
        "modelName": "gpt-5",
        "apiKey": "sk-canary-install",
    }
    response = bearer.post("/api/instances", json=body)
    assert response.status_code == 502
    # The cause, picked from npm's output, not npm's last line (a debug-log path).
    assert response.json()["error"] == "install failed: npm: ECONNREFUSED reaching the registry"
    instance = bearer.get("/api/instances").json()["instances"][0]
    assert instance["status"] == "error"
    assert instance["errorMessage"].startswith("install failed")
    logs = bearer.get(f"/api/instances/{instance['id']}/logs").json()["logs"]
    assert any(line["message"].startswith("install:") for line in logs)
    # An instance that never booted cannot be stopped.
    stop = bearer.post(f"/api/instances/{instance['id']}/action", json={"action": "stop"})
    assert stop.status_code == 409
    assert bearer.delete(f"/api/instances/{instance['id']}").status_code == 200
