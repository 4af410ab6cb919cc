"""Where the SDK finds the server and the token, and how the CLI's config file is written."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from gentity.client import Client, ConfigError
from gentity.client.config import (
    DEFAULT_URL,
    SavedConfig,
    config_path,
    load_config,
    normalize_url,
    save_config,
)


def test_url_resolution_order(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Client().base_url == DEFAULT_URL
    save_config(SavedConfig(url="http://saved.test:1"))
    assert Client().base_url == "http://saved.test:1"
    monkeypatch.setenv("GENTITY_API_URL", "http://env.test:2/")
    assert Client().base_url == "http://env.test:2"
    assert Client("http://explicit.test:3").base_url == "http://explicit.test:3"


def test_token_resolution_order(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Client().token is None
    save_config(SavedConfig(url="http://saved.test", token="gn_live_saved"))
    assert Client().token == "gn_live_saved"
    # The saved token belongs to the saved server: never sent to another one.
    assert Client("http://other.test").token is None
    monkeypatch.setenv("GENTITY_API_URL", "http://other.test")
    assert Client().token is None
    monkeypatch.setenv("GENTITY_TOKEN", "gn_live_env")
    assert Client().token == "gn_live_env"
    assert Client(token="gn_live_explicit").token == "gn_live_explicit"


def test_config_location(isolated_config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert config_path() == isolated_config / "gentity" / "config.json"
    monkeypatch.delenv("XDG_CONFIG_HOME")
    monkeypatch.setenv("HOME", "/home/someone")
    assert config_path() == Path("/home/someone/.config/gentity/config.json")


def test_saved_privately_whatever_the_umask(isolated_config: Path) -> None:
    old = os.umask(0)  # the most permissive umask: the mode must not depend on it
    try:
        path = save_config(SavedConfig(url="http://a.test", token="gn_live_x"))
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert json.loads(path.read_text()) == {"url": "http://a.test", "token": "gn_live_x"}
    # Rewritten in place of the old one, with no temporary file left behind.
    save_config(SavedConfig(url="http://a.test"))
    assert load_config() == SavedConfig(url="http://a.test")
    assert [p.name for p in path.parent.iterdir()] == ["config.json"]


def test_unreadable_config_is_a_clear_error(isolated_config: Path) -> None:
    path = config_path()
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="cannot read"):
        Client()
    path.write_text("[]")
    with pytest.raises(ConfigError, match="not a JSON object"):
        load_config()


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("https://gentity.example.com/", "https://gentity.example.com"),
        ("gentity.example.com", "https://gentity.example.com"),
        ("localhost:8080", "http://localhost:8080"),
        ("127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("[::1]:8080", "http://[::1]:8080"),
        ("http://10.0.0.5:8080/base/", "http://10.0.0.5:8080/base"),
    ],
)
def test_normalize_url(given: str, expected: str) -> None:
    assert normalize_url(given) == expected


@pytest.mark.parametrize("bad", ["", "ftp://example.com", "http://"])
def test_bad_urls(bad: str) -> None:
    with pytest.raises(ConfigError):
        normalize_url(bad)
