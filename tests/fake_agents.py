"""A stand-in for an agent's CLI in the shared install cache, so tests need no download."""

from __future__ import annotations

import httpx

from gentity.settings import Settings


def seed_fake_claude(settings: Settings, script: str) -> None:
    """Install ``script`` as the ``claude`` of the claude-code agent, as if npm had."""
    cache = settings.data_dir / "agents" / "claude-code"
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
