"""Setting a sandbox up again when a host mount changed under bubblewrap."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from gentity.providers.compute.base import ProviderError
from gentity.providers.compute.local import provider as local_provider
from gentity.providers.compute.local.guest_process import SandboxSetupRaced, wait_for_waiting
from gentity.providers.compute.local.provider import LocalProvider

# What bubblewrap printed when another instance's volume was unmounted while it set up.
RACED = (
    "bwrap: Can't bind mount /oldroot/ on /newroot/: Unable to apply mount flags: remount "
    '"/newroot/srv/data/instances/x/disk": No such file or directory'
)


def _failed_boot(output: Path, message: str) -> tuple[subprocess.Popen[bytes], int]:
    """A sandbox that printed ``message`` and exited 1 before its guest ran; and where this
    boot's output starts."""
    start = output.stat().st_size if output.exists() else 0
    with output.open("ab") as out:
        process = subprocess.Popen(
            ["sh", "-c", 'echo "$1" >&2; exit 1', "sh", message], stdout=out, stderr=out
        )
    process.wait()
    return process, start


def test_a_host_mount_that_went_away_is_told_apart(tmp_path: Path) -> None:
    output = tmp_path / "guest.out"
    process, start = _failed_boot(output, RACED)
    with pytest.raises(SandboxSetupRaced):
        wait_for_waiting(process, output, start)


def test_other_failures_are_not_retried(tmp_path: Path) -> None:
    output = tmp_path / "guest.out"
    _failed_boot(output, RACED)  # an earlier boot's words do not count for this one
    process, start = _failed_boot(output, "bwrap: setting up uid map: Permission denied")
    with pytest.raises(ProviderError, match="exited with code 1") as raised:
        wait_for_waiting(process, output, start)
    assert not isinstance(raised.value, SandboxSetupRaced)


def test_the_sandbox_is_set_up_again_a_few_times(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    provider = LocalProvider(tmp_path / "data")
    calls: list[str] = []
    failures = iter([True, True, False])
    booted: Any = object()

    def spawn(ref: str, *args: Any, **kwargs: Any) -> Any:
        calls.append(ref)
        if next(failures):
            raise SandboxSetupRaced("the sandbox could not be set up: a host mount changed")
        return booted

    monkeypatch.setattr(provider, "_spawn", spawn)
    paths: Any = None
    assert provider._spawn_retrying("i1", paths, cpus=1, memory_mb=512, hostname="h") is booted
    assert calls == ["i1"] * 3

    calls.clear()
    failures = iter([True] * local_provider.SANDBOX_ATTEMPTS)
    with pytest.raises(SandboxSetupRaced):
        provider._spawn_retrying("i2", paths, cpus=1, memory_mb=512, hostname="h")
    assert calls == ["i2"] * local_provider.SANDBOX_ATTEMPTS
