"""Instances are named by id, a unique start of the id, or name; a miss names what was asked."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator

import httpx
import pytest

from tests.cli.conftest import Cli, assert_one_line_error
from tests.json_body import json_object


@pytest.fixture
def named_pair(logged_in: Cli, admin: httpx.Client) -> Iterator[tuple[str, str]]:
    """Two running ``shell`` instances named alpha and beta: their ids."""
    ids: list[str] = []
    try:
        for name in ("alpha", "beta"):
            created = json_object(
                logged_in.json("compute", "create", "--agent", "shell", "--name", name)
            )
            ids.append(created["id"])
        yield ids[0], ids[1]
    finally:
        for instance_id in ids:
            admin.delete(f"/api/instances/{instance_id}", timeout=60)


def _unique_prefix(instance_id: str, other: str) -> str:
    length = next(
        n for n in range(1, len(instance_id) + 1) if not other.startswith(instance_id[:n])
    )
    return instance_id[:length]


def test_ids_prefixes_and_names(logged_in: Cli, named_pair: tuple[str, str]) -> None:
    alpha, beta = named_pair
    by_name, by_prefix, by_id = logged_in.many(
        [
            ["compute", "show", "alpha", "--json"],
            ["compute", "show", _unique_prefix(beta, alpha), "--json"],
            ["compute", "show", alpha, "--json"],
        ]
    )
    assert json_object(json.loads(by_name.stdout))["id"] == alpha, by_name.stderr
    assert json_object(json.loads(by_prefix.stdout))["id"] == beta, by_prefix.stderr
    assert json_object(json.loads(by_id.stdout))["id"] == alpha, by_id.stderr

    # Every id starts with "c": ambiguous, and the error lists the candidates.
    ambiguous, missing, logs_missing = logged_in.many(
        [["compute", "stop", "c"], ["compute", "show", "gamma"], ["compute", "logs", "gamma"]]
    )
    assert_one_line_error(ambiguous, '"c" matches 2 instances')
    assert f"{alpha} (alpha)" in ambiguous.stderr and f"{beta} (beta)" in ambiguous.stderr
    for result in (missing, logs_missing):
        assert_one_line_error(result, 'no instance "gamma" (see: gentity compute ls)')

    assert logged_in.ok("compute", "stop", "beta").strip() == f"Stopped {beta} (beta)."
    assert json_object(logged_in.json("compute", "show", beta))["status"] == "stopped"


def test_following_logs_ends_with_why(logged_in: Cli, named_pair: tuple[str, str]) -> None:
    alpha, _ = named_pair
    follow = subprocess.Popen(
        logged_in.argv("compute", "logs", "alpha", "-f", "-n", "1", "--json"),
        env=logged_in.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert follow.stdout is not None
        assert json.loads(follow.stdout.readline())  # following: the history line is out
        assert "Destroyed" in logged_in.ok("compute", "rm", "-y", "alpha")
        out, err = follow.communicate(timeout=60)
    finally:
        follow.kill()
    assert follow.returncode == 0, err
    assert err.strip().splitlines()[-1] == f"instance {alpha} (alpha) was destroyed"
    assert all(json.loads(line) for line in out.splitlines())  # stdout stays JSON lines
