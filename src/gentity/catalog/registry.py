"""Asking the package registries which versions of an agent exist, with npm and pip themselves.

The installers answer, not a client of our own: they read the same configuration an install
does (a mirror in ``.npmrc`` or ``pip.conf``, ``npm_config_*`` and ``PIP_*`` variables, a
proxy), so a version found here is one the install can fetch.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Final

from gentity.catalog import InstallStep
from gentity.guest.install import FailureCause

LOOKUP_TIMEOUT: Final = 120.0


class RegistryError(Exception):
    """The registry could not be asked, or it does not know the package; says which."""


def latest_version(step: InstallStep) -> str:
    """The version the registry installs when none is named (npm's ``latest`` tag, pip's
    newest final release)."""
    if step.npm:
        found = _npm_view(step.npm)
    else:
        versions = _pip_versions(step.package, pre=False)
        found = versions[0] if versions else None
    if not found:
        raise RegistryError(f"the registry has no version of {step.package}")
    return found


def has_version(step: InstallStep, version: str) -> bool:
    """Whether the registry has exactly this version of the package."""
    if step.npm:
        return _npm_view(f"{step.npm}@{version}") == version
    return version in _pip_versions(step.package, pre=True)


def _npm_view(spec: str) -> str | None:
    # An exact version the package lacks: npm 11 answers E404 "No match found for version",
    # older ones print nothing; a package the registry does not know at all is an E404 too.
    done = _run(["npm", "view", "--json", "--", spec, "version"], "npm")
    try:
        value = json.loads(done.stdout) if done.stdout.strip() else None
    except ValueError:
        value = None
    if done.returncode != 0:
        error = value.get("error") if isinstance(value, dict) else None
        summary = str(error.get("summary", "")) if isinstance(error, dict) else ""
        if summary.startswith("No match found for version"):
            return None
        raise _failure(done, "npm")
    if isinstance(value, list):  # a range matching several versions; an exact one does not
        value = value[-1] if value else None
    return value if isinstance(value, str) else None


def _pip_versions(package: str, *, pre: bool) -> list[str]:
    """The index's versions of ``package``, newest first."""
    argv = [sys.executable, "-m", "pip", "index", "versions", "--disable-pip-version-check"]
    done = _run([*argv, *(["--pre"] if pre else []), "--", package], "pip")
    if done.returncode != 0:
        raise _failure(done, "pip")
    for line in done.stdout.splitlines():
        if line.startswith("Available versions:"):
            return [v.strip() for v in line.partition(":")[2].split(",") if v.strip()]
    return []


def _run(argv: list[str], program: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            argv, capture_output=True, text=True, timeout=LOOKUP_TIMEOUT, stdin=subprocess.DEVNULL
        )
    except FileNotFoundError:
        raise RegistryError(f"{program} is not installed here") from None
    except subprocess.TimeoutExpired:
        raise RegistryError(f"{program}: no answer after {LOOKUP_TIMEOUT:.0f} seconds") from None


def _failure(done: subprocess.CompletedProcess[str], program: str) -> RegistryError:
    cause = FailureCause()
    for line in done.stderr.splitlines():
        cause.feed(line)
    detail = cause.describe() or (f"{program}: {cause.last}" if cause.last else "")
    return RegistryError(detail or f"{program} exited with code {done.returncode}")
