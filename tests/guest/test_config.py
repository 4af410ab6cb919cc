"""Parsing the bootstrap and the config that ``configure`` carries."""

from __future__ import annotations

import hashlib

import pytest

from gentity.guest import config as c

DIGEST = hashlib.sha256(b"top-secret-value").hexdigest()


def base_config() -> dict[str, object]:
    return {
        "logFile": "/tmp/x/agent.log",
        "workdir": "/tmp/x/vol",
        "command": ["bash", "-l"],
    }


def test_parse_config_defaults_and_clamps() -> None:
    data = base_config() | {"replayBytes": 10, "cols": 5000, "env": {"K": "v"}}
    config = c.parse_config(data)
    assert config.replay_bytes == 65536
    assert (config.cols, config.rows) == (1000, 32)
    assert config.restart == "always" and config.install is None
    assert config.shell == ["sh"]
    # Secrets stay out of repr(), so they cannot leak through a debug dump.
    assert "'v'" not in repr(config)


def test_secret_values_are_the_named_env_values() -> None:
    install = {"lockFile": "/l", "marker": "/m", "commands": [], "env": {"KEY": "i-key"}}
    data = base_config() | {"env": {"KEY": "a-key", "X": "1"}, "secretEnv": ["KEY"]}
    config = c.parse_config(data | {"install": install | {"package": "@x/cli"}})
    assert config.secret_values() == ["a-key", "i-key"]
    assert config.install is not None and config.install.package == "@x/cli"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"command": []}, "command"),
        ({"workdir": "relative"}, "workdir"),
        ({"restart": "sometimes"}, "restart"),
        ({"env": {"A": 1}}, "env"),
        ({"install": {"commands": [["x"]], "marker": "/m"}}, "lockFile"),
        ({"cols": "wide"}, "cols"),
    ],
)
def test_parse_config_errors(change: dict[str, object], message: str) -> None:
    with pytest.raises(c.ConfigError, match=message):
        c.parse_config(base_config() | change)


def test_parse_bootstrap() -> None:
    boot = c.parse_bootstrap({"listen": "fd:3", "secretSha256": DIGEST, "childCgroupFd": 4})
    assert boot == c.Bootstrap("fd:3", bytes.fromhex(DIGEST), child_cgroup_fd=4)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"secretSha256": "top-secret-value"}, "secretSha256"),
        ({"secretSha256": None}, "secretSha256"),
        ({"listen": "ftp:x"}, "listen"),
        ({"listen": "tls:h:1"}, "TLS"),
        ({"echoLog": "yes"}, "echoLog"),
        ({"hostname": "x" * 64}, "hostname"),
    ],
)
def test_parse_bootstrap_errors(change: dict[str, object], message: str) -> None:
    with pytest.raises(c.ConfigError, match=message) as info:
        c.parse_bootstrap({"listen": "unix:/tmp/x.sock", "secretSha256": DIGEST} | change)
    assert "top-secret-value" not in str(info.value)


def test_bootstrap_from_env() -> None:
    assert c.bootstrap_from_env({}) is None
    env = {
        "GENTITY_GUEST_LISTEN": "tcp:0.0.0.0:8022",
        "GENTITY_GUEST_SECRET_SHA256": DIGEST,
        "GENTITY_GUEST_ECHO_LOG": "1",
    }
    boot = c.bootstrap_from_env(env)
    assert boot == c.Bootstrap("tcp:0.0.0.0:8022", bytes.fromhex(DIGEST), echo_log=True)
    with pytest.raises(c.ConfigError, match="GENTITY_GUEST_ECHO_LOG"):
        c.bootstrap_from_env(env | {"GENTITY_GUEST_ECHO_LOG": "maybe"})
