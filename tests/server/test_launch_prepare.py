"""What the control plane asks a guest to prepare for each catalog agent: its seeded files and,
for the coding agents, a git repository made in the working directory when no repo is given."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

import pytest

from gentity.catalog import load_catalog
from gentity.providers.compute.base import GuestLayout, guest_config
from gentity.server.context import AppContext
from gentity.server.db.orm import Instance
from gentity.server.services.instances import _launch


class _Box:
    def decrypt(self, ciphertext: bytes, *, context: str) -> str:
        return "guest-secret"


def _config(agent_id: str, repo: str | None = None) -> dict[str, Any]:
    agent = load_catalog().get(agent_id)
    assert agent is not None
    model = agent.models[0]
    inst = Instance(
        id="i-1",
        agent_type=agent.id,
        model_provider=model.provider,
        model_name=model.name,
        guest_secret_ciphertext=b"x",
        env_ciphertext=None,
        api_key_ciphertext=None,
        restart_policy="always",
        repo=repo,
    )
    ctx = cast(AppContext, SimpleNamespace(catalog=load_catalog(), box=_Box()))
    layout = GuestLayout(log_file="/run/gentity/logs/agent.log", workdir="/home/agent", env={})
    return guest_config(_launch(ctx, inst), layout)


@pytest.mark.parametrize("agent_id", [a.id for a in load_catalog().agents])
def test_the_coding_agents_get_a_git_repository_and_the_shell_none(agent_id: str) -> None:
    prepare = _config(agent_id)["prepare"]
    assert prepare["gitInit"] is (agent_id != "shell")
    assert prepare["repo"] is None


def test_a_repo_is_passed_on_beside_git_init() -> None:
    # The guest clones it, and then makes no repository of its own.
    prepare = _config("aider", repo="https://example.com/x.git")["prepare"]
    assert prepare["repo"] == "https://example.com/x.git"
    assert prepare["gitInit"] is True
