import httpx

REQUIRED_AGENTS = {"claude-code", "codex", "gemini-cli", "opencode", "aider", "shell"}


def test_catalog_is_public_and_in_contract_shape(client: httpx.Client) -> None:
    response = client.get("/api/catalog/agents")
    assert response.status_code == 200
    agents = response.json()["agents"]
    assert {a["id"] for a in agents} >= REQUIRED_AGENTS
    for agent in agents:
        for key, kind in {
            "id": str,
            "name": str,
            "description": str,
            "defaultCpus": int,
            "defaultMemoryMb": int,
            "defaultVolumeGb": int,
            "models": list,
        }.items():
            assert isinstance(agent[key], kind), (agent["id"], key)
        assert agent["models"], agent["id"]
        for model in agent["models"]:
            assert set(model) == {"provider", "name", "label"}
    by_id = {a["id"]: a for a in agents}
    assert by_id["shell"]["requiresApiKey"] is False
    assert by_id["claude-code"]["requiresApiKey"] is True
    assert {"provider": "anthropic", "name": "claude-sonnet-5-5"}.items() <= (
        by_id["claude-code"]["models"][0].items()
    )


def test_catalog_ignores_credentials(client: httpx.Client) -> None:
    response = client.get("/api/catalog/agents", headers={"Authorization": "Bearer nonsense"})
    assert response.status_code == 200
