"""The local provider's process helpers: killing what is left of a sandbox."""

from __future__ import annotations

import logging
import subprocess
import time

import pytest

from gentity.providers.compute.local import processes


def test_kill_tree_kills_and_a_zombie_counts_as_gone() -> None:
    child = subprocess.Popen(["sleep", "60"])
    try:
        started = time.monotonic()
        processes.kill_tree({child.pid})
        # Dead (a zombie until waited for) counts as gone: no waiting out the timeout.
        assert time.monotonic() - started < 1
        assert child.wait(timeout=5) == -9
        assert not processes.alive(child.pid)
    finally:
        child.kill()
        child.wait()


def test_kill_tree_names_what_outlives_sigkill(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # A process in uninterruptible sleep ignores SIGKILL until it wakes; one that stays is
    # stood in for by a process the helper is told is still alive.
    child = subprocess.Popen(["sleep", "60"])
    try:
        monkeypatch.setattr(processes, "alive", lambda pid: True)
        with caplog.at_level(logging.WARNING, logger=processes.__name__):
            processes.kill_tree({child.pid}, timeout=0.2)
        assert f"processes still alive 0.2 s after SIGKILL: {child.pid} (" in caplog.text
    finally:
        child.kill()
        child.wait()
