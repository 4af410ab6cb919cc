"""A first start whose install fails, through the API: the pin in the data directory reaches
the installer, and the instance's errorMessage and log name the cause. No network: pip's
index is a closed port, set the way an operator sets it (the server's PIP_* variables)."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from gentity.catalog import write_pins
from gentity.settings import Settings
from tests.cli.conftest import closed_port

AIDER = {
    "agentType": "aider",
    "modelProvider": "anthropic",
    "modelName": "claude-sonnet-4-5",
    "apiKey": "sk-ant-install-canary-0123456789",
}


@pytest.fixture
def settings(settings_factory: Callable[..., Settings]) -> Settings:
    made = settings_factory()
    made.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_pins(made.data_dir, {"aider": "0.80.0"})  # as `gentity agents update` would
    return made


@pytest.mark.local_only
def test_a_failed_install_names_its_cause(
    bearer: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    index = f"http://127.0.0.1:{closed_port()}/simple"
    for name in ("PIP_FIND_LINKS", "PIP_EXTRA_INDEX_URL", "PIP_CONSTRAINT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PIP_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("PIP_INDEX_URL", index)
    monkeypatch.setenv("PIP_RETRIES", "1")

    cause = (
        "install failed: pip: No matching distribution found for aider-chat==0.80.0; "
        "the package index could not be reached"
    )
    created = bearer.post("/api/instances", json=AIDER, timeout=120)
    assert created.status_code == 502, created.text
    assert created.json() == {"error": cause}

    [instance] = bearer.get("/api/instances").json()["instances"]
    assert instance["status"] == "error"
    assert instance["errorMessage"] == cause
    logs = bearer.get(f"/api/instances/{instance['id']}/logs", params={"lines": 1000}).json()
    records = [(r["level"], r["message"]) for r in logs["logs"]]
    assert ("error", cause) in records
    assert ("info", f"install: Looking in indexes: {index}") in records
    assert any(
        m.startswith("install: running ") and m.endswith(" aider-chat==0.80.0") for _, m in records
    )
    assert AIDER["apiKey"] not in str(records)
