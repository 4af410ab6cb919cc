"""``gentity tokens`` and ``gentity catalog``: tables for people, JSON for scripts."""

from __future__ import annotations

import httpx

from tests.cli.conftest import Cli, assert_one_line_error
from tests.conftest import LiveServer


def test_create_list_revoke(logged_in: Cli, server: LiveServer) -> None:
    result = logged_in("tokens", "create", "ci-job")
    assert result.returncode == 0, result.stderr
    secret = result.stdout.strip()  # the token alone on stdout: TOKEN=$(gentity tokens create)
    assert secret.startswith("gn_live_") and "\n" not in secret
    assert "not shown again" in result.stderr

    listed = logged_in.json("tokens", "ls")
    assert isinstance(listed, dict)
    record = next(t for t in listed["tokens"] if t["name"] == "ci-job")
    assert set(record) >= {"id", "name", "prefix", "createdAt", "lastUsedAt", "expiresAt"}
    assert secret.startswith(record["prefix"])
    table = logged_in.ok("tokens", "ls")
    assert "ci-job" in table and record["prefix"] in table
    assert secret not in table  # only the public prefix is ever listed

    assert logged_in.json("tokens", "revoke", record["id"]) == {"ok": True}
    me = httpx.get(f"{server.url}/api/auth/me", headers={"Authorization": f"Bearer {secret}"})
    assert me.status_code == 401
    again = logged_in("tokens", "revoke", record["id"])
    assert_one_line_error(again, f'no token "{record["id"]}" (see: gentity tokens ls)')

    created = logged_in.json("tokens", "create", "[red]json[/]")
    assert isinstance(created, dict)
    assert created["token"].startswith("gn_live_") and created["record"]["name"] == "[red]json[/]"
    # Names are shown as typed, never read as rich markup.
    assert "[red]json[/]" in logged_in.ok("tokens", "ls")


def test_catalog(cli: Cli, server: LiveServer) -> None:
    # Public: works without logging in.
    env = {"GENTITY_API_URL": server.url}
    result = cli("catalog", env=env)
    assert result.returncode == 0, result.stderr
    assert "claude-code" in result.stdout and "ANTHROPIC_API_KEY" in result.stdout
    # One row per model, with that model's own key variable, also for multi-provider agents.
    rows = [line.split() for line in result.stdout.splitlines()]
    assert ["shell", "Shell", "none/bash", "-"] in rows
    assert ["openai/gpt-5", "OPENAI_API_KEY"] in rows
    assert ["google/gemini-2.5-pro", "GEMINI_API_KEY"] in rows
    opencode = next(i for i, row in enumerate(rows) if row[:1] == ["opencode"])
    assert rows[opencode][-2:] == ["anthropic/claude-sonnet-5", "ANTHROPIC_API_KEY"]
    data = cli("catalog", "--json", env=env)
    agents = {a["id"]: a for a in httpx.Response(200, content=data.stdout).json()["agents"]}
    assert agents["shell"]["requiresApiKey"] is False
    assert agents["claude-code"]["models"][0]["provider"] == "anthropic"
