"""``gentity compute create`` shows the new instance's id at once, then its start as it happens:
the install and start lines of its log, until it runs or fails (with the failure's cause)."""

from __future__ import annotations

import re

import httpx
import pytest

from gentity import models
from gentity.client.calls import CREATE_TIMEOUT
from tests.cli.conftest import Cli, closed_port

_CREATING = re.compile(r"Creating (\w+) \((sh|ai)-\w+\); its log follows\.")


def _id_line(stderr: str) -> tuple[int, str]:
    lines = stderr.splitlines()
    found = [(n, m.group(1)) for n, line in enumerate(lines) if (m := _CREATING.fullmatch(line))]
    assert len(found) == 1, stderr
    return found[0]


def test_create_prints_the_id_then_the_start_as_it_happens(
    logged_in: Cli, admin: httpx.Client
) -> None:
    result = logged_in("compute", "create", "--agent", "shell")
    assert result.returncode == 0, result.stderr
    where, instance_id = _id_line(result.stderr)
    try:
        lines = result.stderr.splitlines()
        # The id comes first, before the lines the instance wrote while it started (which
        # precede `running`), and those follow under it as the log has them.
        assert where == 0, result.stderr
        started = [n for n, line in enumerate(lines) if line.startswith("  agent started (pid ")]
        guest = [n for n, line in enumerate(lines) if line.startswith("  guest started")]
        assert started and guest and where < guest[0] < started[0], result.stderr
        assert result.stdout.strip() == f"Created {instance_id} ({_subdomain(lines)}), running."
        log = admin.get(f"/api/instances/{instance_id}/logs", params={"lines": 1000}).json()
        printed = [line.removeprefix("  ") for line in lines[where + 1 : started[0] + 1]]
        assert printed == [r["message"] for r in log["logs"]][: len(printed)]
    finally:
        admin.delete(f"/api/instances/{instance_id}", timeout=60)


def _subdomain(lines: list[str]) -> str:
    match = re.search(r"\((sh-\w+)\)", lines[0])
    assert match is not None
    return match.group(1)


@pytest.mark.local_only
def test_a_failed_install_streams_its_lines_and_ends_with_the_cause(
    logged_in: Cli, admin: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The server (in this process) installs with the operator's pip settings: a closed index.
    index = f"http://127.0.0.1:{closed_port()}/simple"
    for name in ("PIP_FIND_LINKS", "PIP_EXTRA_INDEX_URL", "PIP_CONSTRAINT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PIP_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("PIP_INDEX_URL", index)
    monkeypatch.setenv("PIP_RETRIES", "1")

    key = "sk-ant-cli-install-canary-0123456789"
    result = logged_in(
        "compute", "create", "--agent", "aider", env={"ANTHROPIC_API_KEY": key}, timeout=180
    )
    assert result.returncode == 1, result.stdout
    where, instance_id = _id_line(result.stderr)
    lines = result.stderr.splitlines()
    assert where == 0, result.stderr
    assert f"  install: Looking in indexes: {index}" in lines[where + 1 :]
    assert lines[-1] == (
        f"Error: {instance_id} (Aider - claude-sonnet-5) did not start: install failed: pip: "
        "No matching distribution found for aider-chat=="
        f"{_pinned('aider')}; the package index could not be reached"
    )
    assert key not in result.stderr + result.stdout
    assert admin.get(f"/api/instances/{instance_id}").json()["status"] == "error"
    admin.delete(f"/api/instances/{instance_id}", timeout=60)


def _pinned(agent: str) -> str:
    from gentity.catalog import load_catalog

    found = load_catalog().get(agent)
    assert found is not None and found.install is not None
    return found.install.version


def test_the_cli_waits_as_long_as_the_server_allows() -> None:
    # One constant for both: the server's install limit plus the rest of a start.
    assert CREATE_TIMEOUT == models.CREATE_TIMEOUT_SECONDS > models.INSTALL_TIMEOUT_SECONDS
    from gentity.providers.compute.local import install

    assert install.INSTALL_TIMEOUT_SECONDS == models.INSTALL_TIMEOUT_SECONDS
