"""Documentation stays true: every setting is documented, the README keeps its two commands."""

from pathlib import Path

from gentity.providers.compute import registry
from gentity.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


def test_every_setting_is_documented() -> None:
    doc = (ROOT / "docs" / "configuration.md").read_text()
    missing = [
        f"GENTITY_{name.upper()}"
        for name in Settings.model_fields
        if f"`GENTITY_{name.upper()}`" not in doc
    ]
    assert missing == [], f"undocumented settings: {missing}"


def test_every_providers_settings_are_documented() -> None:
    doc = (ROOT / "docs" / "configuration.md").read_text()
    variables = [
        f"{section.model_config.get('env_prefix', '')}{name}".upper()
        for section in (registry.load(n).settings for n in registry.available())
        for name in section.model_fields
    ]
    assert "GENTITY_LOCAL_WARM_SPARES" in variables
    missing = [v for v in variables if f"`{v}`" not in doc]
    assert missing == [], f"undocumented provider settings: {missing}"


def test_readme_quick_start_has_the_two_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    quick_start = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    assert "make run" in quick_start
    assert "make test" in quick_start


def test_ci_runs_the_readme_test_command() -> None:
    assert "make test" in (ROOT / ".ci" / "run").read_text()
