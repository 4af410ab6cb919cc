"""Loading agents.json: what a broken catalog says, and what a valid one gives."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from gentity.catalog import CatalogError, InstallStep, load_catalog
from gentity.guest.config import ReadyRule

_SHIPPED = Path(__file__).parents[2] / "src" / "gentity" / "catalog" / "agents.json"


def _write(tmp_path: Path, change: dict[str, Any]) -> Path:
    """The shipped catalog with the first agent's fields replaced by ``change``."""
    raw = json.loads(_SHIPPED.read_text())
    raw["agents"][0] = {**copy.deepcopy(raw["agents"][0]), **change}
    path = tmp_path / "agents.json"
    path.write_text(json.dumps(raw))
    return path


def test_the_shipped_catalog_has_one_package_per_install() -> None:
    installs = {agent.id: agent.install for agent in load_catalog().agents}
    assert installs["claude-code"] == InstallStep(npm="@anthropic-ai/claude-code")
    assert installs["aider"] == InstallStep(pypi="aider-chat")
    assert installs["shell"] is None


@pytest.mark.parametrize(
    "install",
    [{"npm": "a", "pypi": "b"}, {}, {"npm": ""}, {"cargo": "x"}, {"npm": 3}, ["npm", "x"]],
)
def test_an_install_must_name_exactly_one_package(tmp_path: Path, install: object) -> None:
    with pytest.raises(CatalogError, match=r"^claude-code: install must be"):
        load_catalog(_write(tmp_path, {"install": install}))


@pytest.mark.parametrize(
    ("ready", "message"),
    [
        ({"quietMs": "2000"}, "ready.quietMs must be an integer"),
        ({"quietMs": -1}, "ready.quietMs must be an integer"),
        ({"pattern": "("}, "ready.pattern is not a valid regular expression"),
        ("fast", "ready must be an object"),
    ],
)
def test_a_bad_ready_rule_names_the_agent(tmp_path: Path, ready: object, message: str) -> None:
    with pytest.raises(CatalogError, match=rf"^claude-code: {message}"):
        load_catalog(_write(tmp_path, {"ready": ready}))


def test_a_ready_rule_is_read_as_given(tmp_path: Path) -> None:
    catalog = load_catalog(_write(tmp_path, {"ready": {"quietMs": 50, "pattern": "> $"}}))
    assert catalog.agents[0].ready == ReadyRule(quiet_ms=50, pattern="> $")
