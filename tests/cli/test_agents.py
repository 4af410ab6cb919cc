"""``gentity agents``: pins in the data directory, moved only to versions the registry has.

The version checks ask the real npm registry (as ``npm view`` does for anyone): no fake
registry stands in for it. The unreachable-registry case needs no network.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from gentity.catalog import load_catalog
from tests.cli.conftest import Cli, assert_one_line_error, closed_port


def _env(data: Path, **extra: str) -> dict[str, str]:
    return {"GENTITY_DATA_DIR": str(data), "npm_config_update_notifier": "false", **extra}


def _refused(result: subprocess.CompletedProcess[str], expected: str) -> None:
    """One error line after the note naming the data directory, as every on-server command."""
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("Data directory: "), result.stderr
    assert_one_line_error(
        subprocess.CompletedProcess(result.args, result.returncode, "", "\n".join(lines[1:])),
        expected,
    )


def _shipped(agent: str) -> str:
    found = load_catalog().get(agent)
    assert found is not None and found.install is not None
    return found.install.version


def test_versions_come_from_the_catalog_unless_the_data_directory_pins_them(
    cli: Cli, tmp_path: Path
) -> None:
    (tmp_path / "agent-versions.json").write_text('{"aider": "0.80.0"}')
    result = cli("agents", "versions", "--json", env=_env(tmp_path))
    assert result.returncode == 0, result.stderr
    rows = {r["id"]: r for r in json.loads(result.stdout)["agents"]}
    assert rows["aider"] == {
        "id": "aider",
        "package": "aider-chat",
        "version": "0.80.0",
        "pinnedBy": "data dir",
    }
    assert rows["claude-code"]["version"] == _shipped("claude-code")
    assert rows["claude-code"]["pinnedBy"] == "catalog"
    assert "shell" not in rows  # installs nothing


def test_update_moves_a_pin_to_a_version_the_registry_has(cli: Cli, tmp_path: Path) -> None:
    older = "2.0.0"
    result = cli("agents", "update", "claude-code", "--version", older, env=_env(tmp_path))
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "agent-versions.json").read_text()) == {"claude-code": older}
    assert f"{_shipped('claude-code')} -> {older}" in result.stdout
    assert "running instances keep theirs until they are restarted" in result.stderr
    assert "Restart the server" in result.stderr

    # Back to the catalog's own version: the override goes, so a newer catalog moves it again.
    back = cli(
        "agents", "update", "claude-code", "--version", _shipped("claude-code"), env=_env(tmp_path)
    )
    assert back.returncode == 0, back.stderr
    assert json.loads((tmp_path / "agent-versions.json").read_text()) == {}


def test_update_refuses_a_version_the_registry_does_not_have(cli: Cli, tmp_path: Path) -> None:
    result = cli("agents", "update", "claude-code", "--version", "9999.0.0", env=_env(tmp_path))
    _refused(result, "@anthropic-ai/claude-code has no version 9999.0.0 in the registry")
    assert not (tmp_path / "agent-versions.json").exists()


def test_update_says_why_when_the_registry_cannot_be_asked(cli: Cli, tmp_path: Path) -> None:
    registry = f"http://127.0.0.1:{closed_port()}/"
    env = _env(tmp_path, npm_config_registry=registry, npm_config_fetch_retries="0")
    result = cli("agents", "update", "codex", "--version", "0.1.0", env=env)
    _refused(result, "codex: cannot ask the registry: npm: ECONNREFUSED reaching the registry")
    assert not (tmp_path / "agent-versions.json").exists()


def test_update_checks_what_it_is_given_before_asking(cli: Cli, tmp_path: Path) -> None:
    results = cli.many(
        [
            ["agents", "update", "--version", "1.0.0"],
            ["agents", "update", "claude-code", "--version", "^1.0.0"],
            ["agents", "update", "shell"],
        ],
        env=_env(tmp_path),
    )
    assert_one_line_error(results[0], "--version needs an AGENT")
    assert_one_line_error(results[1], "'^1.0.0' is not an exact version")
    _refused(results[2], "no agent 'shell' installs a package")


def test_update_needs_the_servers_data_directory(cli: Cli, tmp_path: Path) -> None:
    result = cli("agents", "update", "aider", env=_env(tmp_path / "missing"))
    assert_one_line_error(result, f"no data directory at {tmp_path / 'missing'}")
