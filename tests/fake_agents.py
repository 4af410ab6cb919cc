"""A stand-in for an agent's CLI in the shared install cache, so tests need no download."""

from __future__ import annotations

import httpx

from gentity.catalog import load_catalog
from gentity.settings import Settings


def seed_fake_claude(settings: Settings, script: str) -> None:
    """Install ``script`` as the ``claude`` of the claude-code agent, as if npm had, in the
    cache of the version the catalog pins (else the server would install the real one)."""
    agent = load_catalog().get("claude-code")
    assert agent is not None and agent.install is not None
    cache = settings.data_dir / "agents" / agent.install.cache_name(agent.id)
    (cache / "bin").mkdir(parents=True)
    binary = cache / "bin" / "claude"
    binary.write_text(script)
    binary.chmod(0o755)  # as npm leaves it: the instance runs it as its own uid
    (cache / ".installed").write_text("@anthropic-ai/claude-code\n")


def create_claude(client: httpx.Client, api_key: str) -> httpx.Response:
    """Ask for a Claude Code instance with ``api_key`` (the fake must be seeded first)."""
    body = {
        "agentType": "claude-code",
        "modelProvider": "anthropic",
        "modelName": "claude-sonnet-4-5",
        "apiKey": api_key,
    }
    return client.post("/api/instances", json=body)
