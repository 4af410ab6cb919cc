"""Pieces of the fake whose rules are easiest to check on their own."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from gentity.testing.fakefly.ids import machine_id, parse_duration, ulid, volume_id
from gentity.testing.fakefly.ratelimit import RateLimiter, limit_for
from gentity.testing.fakefly.sandbox import Placement, canonical_guest_path, filesystem_args


def test_durations_as_go_strings_or_integers() -> None:
    assert parse_duration("30s") == 30
    assert parse_duration("1m30s") == 90
    assert parse_duration("1.5h") == 5400
    assert parse_duration("250ms") == pytest.approx(0.25)
    assert parse_duration(5_000_000_000) == 5  # JSON integers are nanoseconds, as in fly-go
    assert parse_duration("7", int_unit=1.0) == 7  # query strings carry seconds
    for bad in ("soon", "30 s", "", True, None):
        with pytest.raises(ValueError):
            parse_duration(bad)


def test_identifier_shapes() -> None:
    assert len(machine_id()) == 14 and int(machine_id(), 16) >= 0
    assert volume_id().startswith("vol_") and len(volume_id()) == 20
    first, second = ulid(), ulid()
    assert len(first) == 26 and first != second


def test_published_rate_limits() -> None:
    assert limit_for("GET", "/v1/apps/a/machines/0123456789abcd") == (
        "GET machine a/0123456789abcd",
        5.0,
        10.0,
    )
    stop = limit_for("POST", "/v1/apps/a/machines/0123456789abcd/stop")
    assert stop is not None and stop[1:] == (1.0, 3.0)
    assert limit_for("GET", "/v1/apps/a") is None
    limiter = RateLimiter()
    waits = [limiter.retry_after("POST", "/v1/apps/a/machines/m1/stop") for _ in range(4)]
    assert waits == [0, 0, 0, 1]
    # Per machine: another machine's stops are not held up.
    assert limiter.retry_after("POST", "/v1/apps/a/machines/m2/stop") == 0


def test_a_file_inside_a_host_directory_gets_a_writable_copy_of_it(tmp_path: Path) -> None:
    staged = tmp_path / "note"
    staged.write_text("x")
    args = filesystem_args([Placement(staged, "/etc/gentity/note.txt")])
    pairs = list(itertools.pairwise(args))
    assert ("--dir", "/etc") in pairs  # a tmpfs level, not the host's /etc itself
    assert ("--ro-bind", "/etc") not in pairs
    assert ("--ro-bind", "/etc/passwd") in pairs  # its other entries, read-only
    assert ("--ro-bind", "/usr") in pairs and ("--tmpfs", "/tmp") in pairs
    assert args[-3:] == ["--bind", str(staged), "/etc/gentity/note.txt"]


def test_guest_paths_through_host_symlinks() -> None:
    if Path("/bin").is_symlink():
        assert canonical_guest_path("/bin/tool") == str(Path("/bin").resolve() / "tool")
    assert canonical_guest_path("/data/../data/x") == "/data/x"
    for bad in ("relative/path", "/"):
        with pytest.raises(ValueError):
            canonical_guest_path(bad)
