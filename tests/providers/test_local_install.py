"""The local provider's installs with the real npm and pip: progress in the instance's log,
install scripts that run, and a failure that names its cause. No network: packages come from
a tarball made here, and the registries are pointed at a closed port, through the operator's
own npm/pip variables, which is how an install gets its registry settings."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from gentity.catalog import InstallStep
from gentity.guest.logreader import tail
from gentity.guest.logwriter import LogWriter
from gentity.guest.redact import Redactor
from gentity.providers.compute.local.install import (
    AgentInstallError,
    InstallSandbox,
    bin_dir,
    ensure_installed,
)

pytestmark = pytest.mark.anyio

CLOSED = "http://127.0.0.1:1"


def _sandbox(tmp_path: Path) -> InstallSandbox:
    """The installs run sandboxed, as the local provider runs them, as a uid of this range."""
    return InstallSandbox(tmp_path, uid_range=(1_900_000, 1_999_999))


def _records(path: Path) -> list[tuple[str, str]]:
    return [(r["level"], r["message"]) for r in tail(path, 1000)]


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """npm and pip with nothing to reach but a closed port, and no retries."""
    monkeypatch.setenv("npm_config_registry", f"{CLOSED}/")
    monkeypatch.setenv("npm_config_fetch_retries", "0")
    monkeypatch.setenv("npm_config_update_notifier", "false")
    for name in ("PIP_FIND_LINKS", "PIP_EXTRA_INDEX_URL", "PIP_CONSTRAINT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PIP_CONFIG_FILE", "/dev/null")  # this host's pip.conf adds indexes
    monkeypatch.setenv("PIP_INDEX_URL", f"{CLOSED}/simple")
    monkeypatch.setenv("PIP_RETRIES", "1")


def _pack(tmp_path: Path) -> Path:
    """A tiny npm package whose postinstall leaves a file and says so."""
    source = tmp_path / "probe"
    source.mkdir()
    script = (
        "require('fs').writeFileSync('postinstall-ran', 'yes');"
        "console.log('probe: postinstall ran')"
    )
    (source / "package.json").write_text(
        json.dumps(
            {
                "name": "gentity-probe-agent",
                "version": "1.0.0",
                "bin": {"probe-agent": "cli.js"},
                "scripts": {"postinstall": f'node -e "{script}"'},
            }
        )
    )
    (source / "cli.js").write_text("#!/usr/bin/env node\nconsole.log('probe agent')\n")
    out = subprocess.run(
        ["npm", "pack", "--pack-destination", str(tmp_path)],
        cwd=source,
        capture_output=True,
        text=True,
        check=True,
    )
    return tmp_path / out.stdout.strip().splitlines()[-1]


async def test_npm_runs_the_packages_install_scripts_with_their_output_in_the_log(
    tmp_path: Path, offline: None
) -> None:
    tarball = _pack(tmp_path)
    agents, log_file = tmp_path / "agents", tmp_path / "instance.log"
    step = InstallStep(npm=str(tarball))
    with LogWriter(log_file) as log:
        await ensure_installed(agents, "probe", step, log, _sandbox(tmp_path))
    package = bin_dir(agents, "probe", step).parent / "lib" / "node_modules" / "gentity-probe-agent"
    assert (package / "postinstall-ran").read_text() == "yes"
    assert (bin_dir(agents, "probe", step) / "probe-agent").exists()
    messages = [m for _, m in _records(log_file)]
    assert "install: probe: postinstall ran" in messages  # --foreground-scripts
    assert messages[-1] == "install: done"


async def test_an_unreachable_npm_registry_is_the_error_and_logged_at_error(
    tmp_path: Path, offline: None
) -> None:
    agents, log_file = tmp_path / "agents", tmp_path / "instance.log"
    step = InstallStep(npm="gentity-no-such-agent", version="1.2.3")
    with LogWriter(log_file) as log, pytest.raises(AgentInstallError) as raised:
        await ensure_installed(agents, "probe", step, log, _sandbox(tmp_path))
    assert str(raised.value) == "install failed: npm: ECONNREFUSED reaching the registry"
    records = _records(log_file)
    # The pin reaches the command, and the cause is the one record at ERROR.
    running = [m for _, m in records if m.startswith("install: running npm install")]
    assert len(running) == 1 and running[0].endswith(" gentity-no-such-agent@1.2.3")
    assert [r for r in records if r[0] == "error"] == [("error", str(raised.value))]
    assert not (agents / step.cache_name("probe") / ".installed").exists()


async def test_a_missing_pypi_package_is_the_error_with_the_index_unreachable(
    tmp_path: Path, offline: None
) -> None:
    agents, log_file = tmp_path / "agents", tmp_path / "instance.log"
    step = InstallStep(pypi="gentity-no-such-agent", version="9.9")
    with LogWriter(log_file) as log, pytest.raises(AgentInstallError) as raised:
        await ensure_installed(agents, "probe", step, log, _sandbox(tmp_path))
    assert str(raised.value) == (
        "install failed: pip: No matching distribution found for gentity-no-such-agent==9.9; "
        "the package index could not be reached"
    )
    records = _records(log_file)
    assert ("error", str(raised.value)) in records
    # pip without --quiet: its own lines are in the log.
    assert ("info", f"install: Looking in indexes: {CLOSED}/simple") in records


async def test_the_cause_is_redacted_like_every_record(
    tmp_path: Path, offline: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "sk-install-canary-0123456789"
    monkeypatch.setenv("PIP_INDEX_URL", f"{CLOSED}/simple")
    agents, log_file = tmp_path / "agents", tmp_path / "instance.log"
    step = InstallStep(pypi=f"x{secret}", version="1.0")
    with LogWriter(log_file, redact=Redactor([secret])) as log, pytest.raises(AgentInstallError):
        await ensure_installed(agents, "probe", step, log, _sandbox(tmp_path))
    assert secret not in log_file.read_text()
    assert (
        "error",
        "install failed: pip: No matching distribution found for x[redacted]==1.0; "
        "the package index could not be reached",
    ) in _records(log_file)
