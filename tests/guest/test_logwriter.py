"""The log writer: one well-formed JSON record per line."""

from __future__ import annotations

import json
import re
import stat
from pathlib import Path

from gentity.guest.logreader import tail
from gentity.guest.logwriter import LogWriter

TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def test_writer_records_are_well_formed(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "agent.log"
    with LogWriter(path) as log:
        log.write("info", "hello")
        log.write("warn", 'quotes " and \n newlines and ünïcode')
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    lines = path.read_bytes().splitlines()
    assert len(lines) == 2
    for line in lines:
        rec = json.loads(line)
        assert set(rec) == {"timestamp", "level", "message"}
        assert TIMESTAMP.match(rec["timestamp"])
    assert json.loads(lines[1])["message"] == 'quotes " and \n newlines and ünïcode'
    # Append-only: a second writer adds to the file.
    with LogWriter(path) as log:
        log.write("error", "third")
    assert [r["level"] for r in tail(path, 10)] == ["info", "warn", "error"]
