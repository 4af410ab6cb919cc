"""Each agent's seeded config files, rendered as a guest would write them: the agent starts at
its prompt (signed in through the key's environment variable, the working directory trusted,
the model chosen, no update prompts), and the key itself is in no file."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from gentity.catalog import WORKDIR, CatalogAgent, CatalogError, load_catalog
from gentity.guest.seeds import SeedFile, render
from tests.catalog.test_load_catalog import _write

HOME = "/home/agent"
WORK = f"{HOME}/{WORKDIR}"
KEY = "sk-test-" + "abcdefghij" * 5 + "KEYEND0123456789xyzw"


def _agent(agent_id: str) -> CatalogAgent:
    agent = load_catalog().get(agent_id)
    assert agent is not None
    return agent


def _files(agent_id: str, model_index: int = 0) -> dict[str, str]:
    agent = _agent(agent_id)
    model = agent.models[model_index]
    values = {
        "model": model.name,
        "provider": model.provider,
        "api_key_suffix": KEY[-20:],
        "home": HOME,
        "workdir": WORK,
    }
    return {seed.path: render(seed, values).decode() for seed in agent.seed}


def test_every_agent_starts_in_work_and_reads_its_key_from_the_environment() -> None:
    assert WORK == "/home/agent/work"
    for agent in load_catalog().agents:
        for seed in agent.seed:
            assert not seed.path.startswith("/")
        for model in agent.models:
            assert model.api_key_env is None or model.api_key_env.endswith("_API_KEY")
        for text in _files(agent.id).values():
            assert KEY not in text


def test_claude_code_is_onboarded_trusts_the_workdir_and_approved_the_key() -> None:
    files = _files("claude-code")
    assert set(files) == {".claude.json", ".claude/settings.json"}
    state = json.loads(files[".claude.json"])
    assert state["hasCompletedOnboarding"] is True
    assert state["projects"][WORK]["hasTrustDialogAccepted"] is True
    assert state["customApiKeyResponses"] == {"approved": [KEY[-20:]], "rejected": []}
    assert state["autoUpdates"] is False
    assert json.loads(files[".claude/settings.json"]) == {"model": "claude-sonnet-5-5"}
    assert _agent("claude-code").env == {"DISABLE_AUTOUPDATER": "1"}


def test_codex_uses_the_api_key_and_trusts_the_workdir() -> None:
    # Codex signs in from OPENAI_API_KEY only through a provider of its own with that env_key:
    # its built-in "openai" provider (which a config cannot override) shows the ChatGPT
    # sign-in menu whenever ~/.codex/auth.json is missing, and that file would hold the key.
    config = tomllib.loads(_files("codex", 1)[".codex/config.toml"])
    assert config == {
        "model": "gpt-5",
        "model_provider": "openai-api-key",
        "check_for_update_on_startup": False,
        "model_providers": {
            "openai-api-key": {
                "name": "OpenAI",
                "base_url": "https://api.openai.com/v1",
                "env_key": "OPENAI_API_KEY",
                "wire_api": "responses",
            }
        },
        "projects": {WORK: {"trust_level": "trusted"}},
    }


def test_gemini_cli_uses_the_api_key_and_trusts_the_workdir() -> None:
    files = _files("gemini-cli", 1)
    settings = json.loads(files[".gemini/settings.json"])
    assert settings["security"]["auth"]["selectedType"] == "gemini-api-key"
    assert settings["model"]["name"] == "gemini-2.5-flash"
    assert settings["general"] == {"disableAutoUpdate": True, "disableUpdateNag": True}
    assert json.loads(files[".gemini/trustedFolders.json"]) == {WORK: "TRUST_FOLDER"}


def test_opencode_has_the_model_chosen() -> None:
    config = json.loads(_files("opencode", 2)[".config/opencode/opencode.json"])
    assert config["model"] == "google/gemini-2.5-pro"
    assert config["autoupdate"] is False


def test_aider_asks_nothing_on_start() -> None:
    # Plain "key: value" lines, as YAML reads them.
    lines = _files("aider", 1)[".aider.conf.yml"].splitlines()
    assert dict(line.split(": ", 1) for line in lines) == {
        "model": "openai/gpt-5",
        "check-update": "false",
        "show-release-notes": "false",
        "analytics": "false",
        "gitignore": "false",
        # A model newer than its bundled price list would get a warning and a question.
        "show-model-warnings": "false",
    }


def test_aider_starts_in_a_git_repository_without_probing_the_terminal() -> None:
    aider = _agent("aider")
    # Without a repository Aider asks "No git repo found, create one …? (Y)es/(N)o".
    assert aider.git_init is True
    # Nobody is attached when it starts: its cursor-position probe would time out into a
    # warning on the screen.
    assert aider.env == {"PROMPT_TOOLKIT_NO_CPR": "1"}


def test_every_coding_agent_gets_a_git_repository_and_the_shell_none() -> None:
    assert {a.id for a in load_catalog().agents if a.git_init} == {
        "claude-code",
        "codex",
        "gemini-cli",
        "opencode",
        "aider",
    }


def test_the_shell_needs_nothing_seeded() -> None:
    assert _files("shell") == {}


def test_a_value_that_would_break_a_text_file_is_refused() -> None:
    seed = SeedFile(".toolrc", 'model = "{model}"\n', False)
    values = {"model": 'x"\nevil = true'}
    with pytest.raises(ValueError, match=r"the value of \{model\} cannot go in a text file"):
        render(seed, values)
    # In a JSON file the same value is only a string.
    assert json.loads(render(SeedFile("a.json", {"m": "{model}"}, True), values)) == {
        "m": values["model"]
    }


@pytest.mark.parametrize(
    ("seed", "message"),
    [
        ([{"path": "/etc/x", "text": ""}], "relative to the home"),
        ([{"path": "a/../../x", "text": ""}], "relative to the home"),
        ([{"path": ".x", "text": "{api_key}"}], r"unknown placeholder \{api_key\}"),
        ([{"path": ".x", "json": {"{secret}": 1}}], r"unknown placeholder \{secret\}"),
        ([{"path": ".x", "text": 3}], "text must be a string"),
        ([{"path": ".x", "text": "", "json": {}}], "must be"),
        ([{"path": ".x", "text": ""}, {"path": ".x", "json": {}}], "a path is given twice"),
        ({"path": ".x"}, "must be a list of files"),
    ],
)
def test_a_bad_seed_names_the_agent(tmp_path: Path, seed: object, message: str) -> None:
    with pytest.raises(CatalogError, match=rf"^claude-code: seed.*{message}"):
        load_catalog(_write(tmp_path, {"seed": seed}))


@pytest.mark.parametrize("env", [{"1X": "a"}, {"A-B": "a"}, {"A": 1}, ["A"]])
def test_a_bad_env_names_the_agent(tmp_path: Path, env: object) -> None:
    with pytest.raises(CatalogError, match=r"^claude-code: env must map"):
        load_catalog(_write(tmp_path, {"env": env}))
