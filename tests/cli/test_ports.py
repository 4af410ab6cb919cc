"""``gentity compute ports`` and ``gentity compute open``: preview URLs from the CLI."""

from __future__ import annotations

from tests.cli.conftest import Cli, assert_one_line_error
from tests.conftest import LiveServer
from tests.waiting import wait_until_blocking


def _listening(logged_in: Cli, instance_id: str) -> list[dict[str, object]]:
    found: list[dict[str, object]] = logged_in.json("compute", "ports", instance_id)["ports"]
    return found


def test_ports_public_and_open(logged_in: Cli, shell_instance: str, server: LiveServer) -> None:
    assert_one_line_error(
        logged_in("compute", "open", shell_instance, "8000", "--no-browser"),
        "nothing listens on port 8000",
    )
    # Typed into the agent's own shell (its jobs live as long as the instance).
    started = logged_in(
        "compute",
        "ssh",
        shell_instance,
        "--eof-timeout",
        "1",
        stdin="(python3 -m http.server 8000 >/dev/null 2>&1 &)\n",
    )
    assert "Traceback" not in started.stderr
    wait_until_blocking(
        lambda: 8000 in [p["port"] for p in _listening(logged_in, shell_instance)],
        "http.server listening in the instance",
        timeout=30,
    )
    sub = logged_in.json("compute", "show", shell_instance)["subdomain"]
    url = f"http://8000-{sub}.localhost:{server.port}/"
    entry = {"port": 8000, "url": url, "public": False}
    assert entry in _listening(logged_in, shell_instance)

    table = logged_in.ok("compute", "ports", shell_instance, "--public", "8000")
    row = next(line.split() for line in table.splitlines() if line.startswith("8000"))
    assert row == ["8000", url, "public"]
    assert {**entry, "public": True} in _listening(logged_in, shell_instance)
    logged_in.ok("compute", "ports", shell_instance, "--private", "8000")
    assert entry in _listening(logged_in, shell_instance)

    # Output is not a terminal here: the URL is printed, no browser is started.
    assert logged_in.ok("compute", "open", shell_instance, "8000").strip() == url
    page = logged_in.ok("compute", "open", shell_instance).strip()
    assert page == f"{server.url}/dashboard/instances/{shell_instance}"
    bad = logged_in("compute", "ports", shell_instance, "--public", "70000")
    assert bad.returncode != 0 and "Traceback" not in bad.stderr

    logged_in.ok("compute", "stop", shell_instance)
    assert_one_line_error(logged_in("compute", "ports", shell_instance), "stopped")
