"""``gentity compute cp``, ``ls-files`` and ``rm-file`` against a real instance."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.cli.conftest import Cli

DATA = bytes(range(256)) * 64


def run_bytes(cli: Cli, *args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        cli.argv(*args), input=stdin, env=cli.env, capture_output=True, timeout=90, check=False
    )


def test_cp_both_ways_ls_and_rm(logged_in: Cli, shell_instance: str, tmp_path: Path) -> None:
    iid = shell_instance
    tmp_path = tmp_path / "here"  # the test's own directory holds the server's data too
    tmp_path.mkdir()
    local = tmp_path / "data.bin"
    local.write_bytes(DATA)
    up = logged_in.json("compute", "cp", str(local), f"{iid}:docs/")
    assert up == {"path": "/home/agent/work/docs/data.bin", "size": len(DATA)}
    # stdin in, stdout out: binary-safe, and nothing else on stdout.
    piped = run_bytes(logged_in, "compute", "cp", "-", f"{iid}:docs/piped.bin", stdin=DATA[::-1])
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout == b""
    out = run_bytes(logged_in, "compute", "cp", f"{iid}:docs/piped.bin", "-")
    assert out.returncode == 0, out.stderr
    assert out.stdout == DATA[::-1]

    into_dir = tmp_path / "down"
    into_dir.mkdir()
    logged_in.ok("compute", "cp", f"{iid}:/home/agent/work/docs/data.bin", str(into_dir))
    assert (into_dir / "data.bin").read_bytes() == DATA
    named = tmp_path / "named.bin"
    result = logged_in("compute", "cp", f"{iid}:docs/data.bin", str(named))
    assert result.returncode == 0 and f"to {named}" in result.stderr
    assert named.read_bytes() == DATA

    listed = logged_in.json("compute", "ls-files", iid, "docs")
    assert [(e["name"], e["type"], e["size"]) for e in listed["entries"]] == [
        ("data.bin", "file", len(DATA)),
        ("piped.bin", "file", len(DATA)),
    ]
    table = logged_in.ok("compute", "ls-files", iid)
    assert "docs/" in table and "directory" in table

    # A missing file is a 404 about the file, and a failed download leaves no partial file.
    missing = logged_in("compute", "cp", f"{iid}:docs/nope", str(tmp_path / "nope"))
    assert missing.returncode == 1
    assert "docs/nope: no such file or directory (404)" in missing.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.bin", "down", "named.bin"]
    escape = logged_in("compute", "cp", f"{iid}:/etc/passwd", "-")
    assert escape.returncode == 1 and "outside the instance's volume" in escape.stderr
    both = logged_in("compute", "cp", str(local), str(named))
    assert both.returncode == 1 and "exactly one of SRC and DST" in both.stderr

    not_empty = logged_in("compute", "rm-file", iid, "docs")
    assert not_empty.returncode == 1 and "not empty" in not_empty.stderr
    logged_in.ok("compute", "rm-file", iid, "docs/piped.bin")
    logged_in.ok("compute", "rm-file", "-r", iid, "docs")
    assert "docs" not in json.loads(logged_in.ok("compute", "ls-files", iid, "--json"))["entries"]
