"""The back-off of automatic machine restarts and what the instance says about it (the restarts
themselves run on real instances in tests/faults/test_recovery.py)."""

from __future__ import annotations

from datetime import timedelta

from gentity.server.db.ids import utcnow
from gentity.server.db.orm import Instance
from gentity.server.recovery import MAX_ATTEMPTS, _schedule, agent_exit, delay_before


def test_the_delay_grows_and_the_attempts_are_bounded() -> None:
    assert [delay_before(n) for n in range(1, MAX_ATTEMPTS + 1)] == [0, 5, 10, 20, 40]
    row = Instance(restart_policy="always", recovery_attempts=0)
    before = utcnow()
    assert _schedule(row, "the guest daemon was killed by signal KILL") is True
    assert row.recover_at is not None and before <= row.recover_at <= utcnow()
    assert row.error_message == (
        "the guest daemon was killed by signal KILL; restarting it now (attempt 1 of 5)"
    )
    row.recovery_attempts = 2
    assert _schedule(row, "the guest daemon exited with code 1") is False
    assert row.recover_at is not None and row.recover_at - utcnow() > timedelta(seconds=9)
    assert row.error_message == (
        "the guest daemon exited with code 1; restarting it in 10 s (attempt 3 of 5)"
    )
    row.recovery_attempts = MAX_ATTEMPTS
    assert _schedule(row, "the guest daemon exited with code 1") is False
    assert row.recover_at is None
    assert row.error_message == (
        "the guest daemon exited with code 1; not restarted again after 5 automatic restarts"
        " in a row"
    )


def test_never_restarts_nothing() -> None:
    row = Instance(restart_policy="never", recovery_attempts=0)
    assert _schedule(row, "the machine is stopped") is False
    assert row.recover_at is None
    assert row.error_message == "the machine is stopped; not restarted (restart policy never)"


def test_an_exit_reads_as_a_code_or_a_signal() -> None:
    assert agent_exit(1) == "agent exited with code 1"
    assert agent_exit(0) == "agent exited with code 0"
    assert agent_exit(137) == "agent exited with signal KILL"
    assert agent_exit(143) == "agent exited with signal TERM"
    assert agent_exit(None) == "agent exited"
