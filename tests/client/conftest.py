"""SDK test fixtures: a clean environment, so no developer login leaks into a test."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def isolated_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty config home, and no ``GENTITY_API_URL``/``GENTITY_TOKEN`` from outside."""
    home = tmp_path / "xdg"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home))
    monkeypatch.delenv("GENTITY_API_URL", raising=False)
    monkeypatch.delenv("GENTITY_TOKEN", raising=False)
    return home
