"""One unprivileged host uid per instance, from a configured range, claimed host-wide.

A server running as root runs each instance as a uid of its own (root inside the instance's
user namespace, nobody on the host), so that an instance that got out of its mount namespace
would still own nothing but its own files. Several servers (data directories) may share a
host, so claims are host-wide: one file per uid in :data:`CLAIMS_DIR`, naming the instance
directory that holds it. A claim whose directory is gone (its instance destroyed, its data
directory deleted) is free again.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

CLAIMS_DIR = Path("/var/lib/gentity/uids")
# A claim is moved when a warm spare becomes an instance; its owner path is missing for a
# moment then. Only claims older than this may be taken over as abandoned.
_ABANDONED_AFTER = 300.0


class UidRangeExhausted(Exception):
    """Every uid of the configured range is claimed."""


def parse_range(text: str) -> tuple[int, int]:
    """``"1000000-1999999"`` -> ``(1000000, 1999999)``; ValueError when it makes no sense."""
    low_text, sep, high_text = text.partition("-")
    if not sep or not low_text.strip().isdecimal() or not high_text.strip().isdecimal():
        raise ValueError("expected FIRST-LAST, e.g. 1000000-1999999")
    low, high = int(low_text), int(high_text)
    if not 1000 <= low <= high < 2**32 - 1:
        raise ValueError("the range must lie within 1000..4294967294, first <= last")
    return low, high


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    CLAIMS_DIR.mkdir(parents=True, exist_ok=True, mode=0o700)
    with (CLAIMS_DIR / ".lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _owner(uid: int) -> Path | None:
    try:
        return Path((CLAIMS_DIR / str(uid)).read_text().strip())
    except OSError:
        return None


def _abandoned(uid: int) -> bool:
    claim = CLAIMS_DIR / str(uid)
    try:
        age = time.time() - claim.stat().st_mtime
    except OSError:
        return True
    owner = _owner(uid)
    return age > _ABANDONED_AFTER and (owner is None or not owner.exists())


def _write_claim(uid: int, owner: Path) -> None:
    claim = CLAIMS_DIR / str(uid)
    temporary = claim.with_name(f".{uid}.{os.getpid()}")
    temporary.write_text(f"{owner}\n")
    os.replace(temporary, claim)


def claim(owner: Path, uid_range: tuple[int, int]) -> int:
    """A uid of ``uid_range`` that no other instance on this host holds, now ``owner``'s."""
    low, high = uid_range
    size = high - low + 1
    start = secrets.randbelow(size)
    with _locked():
        for step in range(size):
            uid = low + (start + step) % size
            path = CLAIMS_DIR / str(uid)
            if path.exists() and not _abandoned(uid):
                continue
            _write_claim(uid, owner)
            return uid
    raise UidRangeExhausted(f"no free uid left in {low}-{high}")


def move(uid: int, owner: Path) -> None:
    """Record that the claim now belongs to ``owner`` (a spare taken over by an instance)."""
    with _locked():
        _write_claim(uid, owner)


def release(uid: int, owner: Path) -> None:
    """Give the uid back, if ``owner`` still holds it."""
    with _locked():
        if _owner(uid) == owner:
            with contextlib.suppress(FileNotFoundError):
                (CLAIMS_DIR / str(uid)).unlink()
