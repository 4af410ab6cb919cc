"""Loading agents.json: what a broken catalog says, and what a valid one gives."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from gentity.catalog import CatalogError, InstallStep, load_catalog, read_pins, write_pins
from gentity.guest.config import ReadyRule

_SHIPPED = Path(__file__).parents[2] / "src" / "gentity" / "catalog" / "agents.json"


def _write(tmp_path: Path, change: dict[str, Any]) -> Path:
    """The shipped catalog with the first agent's fields replaced by ``change``."""
    raw = json.loads(_SHIPPED.read_text())
    raw["agents"][0] = {**copy.deepcopy(raw["agents"][0]), **change}
    path = tmp_path / "agents.json"
    path.write_text(json.dumps(raw))
    return path


def test_the_shipped_catalog_pins_one_package_per_install() -> None:
    installs = {agent.id: agent.install for agent in load_catalog().agents}
    claude, aider = installs["claude-code"], installs["aider"]
    assert claude is not None and aider is not None
    assert claude.npm == "@anthropic-ai/claude-code"
    assert aider.pypi == "aider-chat"
    assert installs["shell"] is None
    for step in installs.values():
        assert step is None or step.version.split(".")[0].isdigit()
    assert claude.spec == f"@anthropic-ai/claude-code@{claude.version}"
    assert aider.spec == f"aider-chat=={aider.version}"


@pytest.mark.parametrize(
    "install",
    [
        {"npm": "a", "pypi": "b", "version": "1.0.0"},
        {"version": "1.0.0"},
        {"npm": "", "version": "1.0.0"},
        {"cargo": "x", "version": "1.0.0"},
        {"npm": 3, "version": "1.0.0"},
        {"npm": "a"},
        ["npm", "x"],
    ],
)
def test_an_install_must_name_exactly_one_package(tmp_path: Path, install: object) -> None:
    with pytest.raises(CatalogError, match=r"^claude-code: install must be"):
        load_catalog(_write(tmp_path, {"install": install}))


@pytest.mark.parametrize("version", ["^1.0.0", "latest", "1.0.0 --global", "", "-1", ">=1"])
def test_an_install_names_an_exact_version(tmp_path: Path, version: str) -> None:
    with pytest.raises(CatalogError, match=r"^claude-code: install.version must be an exact"):
        load_catalog(_write(tmp_path, {"install": {"npm": "a", "version": version}}))


def test_the_installers_are_asked_for_the_pinned_version() -> None:
    npm = InstallStep(npm="@scope/agent", version="1.2.3").commands("/t", "python3")
    assert npm[0][:2] == ["npm", "install"] and npm[0][-1] == "@scope/agent@1.2.3"
    # Progress in the log, and the packages' install scripts run whatever npm's defaults.
    assert {"--loglevel=http", "--foreground-scripts", "--ignore-scripts=false"} <= set(npm[0])
    pip = InstallStep(pypi="agent", version="0.8.1").commands("/t", "python3")
    assert pip[0] == ["python3", "-m", "venv", "--clear", "/t"]
    assert pip[1][:4] == ["/t/bin/python", "-m", "pip", "install"]
    assert pip[1][-1] == "agent==0.8.1" and "--quiet" not in pip[1]


def test_each_version_installs_into_a_directory_of_its_own() -> None:
    one, two = InstallStep(npm="a", version="1.0.0"), InstallStep(npm="a", version="1.0.1")
    assert one.cache_name("agent") != two.cache_name("agent")


def test_pins_in_the_data_directory_override_the_catalog(tmp_path: Path) -> None:
    assert read_pins(tmp_path) == {}
    write_pins(tmp_path, {"aider": "0.80.0"})
    catalog = load_catalog().with_pins(read_pins(tmp_path))
    aider, claude = catalog.get("aider"), catalog.get("claude-code")
    assert aider is not None and aider.install is not None
    assert aider.install.spec == "aider-chat==0.80.0"
    assert claude == load_catalog().get("claude-code")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"aider": "^1"}', "expected"),
        ('["aider"]', "expected"),
        ("{", "Expecting"),
        ('{"shell": "1.0.0"}', "no installed agent shell"),
        ('{"nope": "1.0.0"}', "no installed agent nope"),
    ],
)
def test_a_bad_pin_file_stops_the_server_naming_it(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "agent-versions.json").write_text(text)
    with pytest.raises(CatalogError, match=message):
        load_catalog().with_pins(read_pins(tmp_path))


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


@pytest.mark.parametrize(("value", "read"), [(True, True), (False, False)])
def test_git_init_is_read_as_given(tmp_path: Path, value: bool, read: bool) -> None:
    assert load_catalog(_write(tmp_path, {"gitInit": value})).agents[0].git_init is read


def test_git_init_must_be_a_boolean(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="gitInit must be true or false"):
        load_catalog(_write(tmp_path, {"gitInit": "yes"}))


def test_a_ready_rule_is_read_as_given(tmp_path: Path) -> None:
    catalog = load_catalog(_write(tmp_path, {"ready": {"quietMs": 50, "pattern": "> $"}}))
    assert catalog.agents[0].ready == ReadyRule(quiet_ms=50, pattern="> $")


def test_the_fly_guest_image_preinstalls_the_pinned_versions() -> None:
    dockerfile = (_SHIPPED.parents[3] / "deploy" / "guest" / "Dockerfile").read_text()
    args = dict(
        line.removeprefix("ARG ").split("=", 1)
        for line in dockerfile.splitlines()
        if line.startswith("ARG ") and "_VERSION=" in line
    )
    names = {
        "claude-code": "CLAUDE_CODE_VERSION",
        "codex": "CODEX_VERSION",
        "gemini-cli": "GEMINI_CLI_VERSION",
        "opencode": "OPENCODE_VERSION",
        "aider": "AIDER_VERSION",
    }
    for agent in load_catalog().agents:
        if agent.install is not None:
            assert args[names[agent.id]] == agent.install.version, agent.id
