"""The guest daemon as one file, for machines whose image does not have Gentity installed.

On a stock image (``python3`` and nothing of ours) the provider writes this zip application
into the machine through ``config.files`` and runs it with ``python3 <path>``. It is built
from the installed ``gentity.guest`` package, which uses the standard library only, so the
guest on the machine is always the one this control plane speaks to.
"""

from __future__ import annotations

import io
import zipfile
from functools import cache
from pathlib import Path

import gentity
import gentity.guest

_MAIN = b'import runpy\nrunpy.run_module("gentity.guest", run_name="__main__", alter_sys=True)\n'
# Only the package's own name: ``gentity/__init__.py`` loads the SDK lazily, so the guest on
# the machine needs nothing but the standard library.
_PACKAGE_INIT = b'"""Gentity: the guest daemon only."""\n'


@cache
def guest_zipapp() -> bytes:
    """The zip application, built once per process (a few tens of kilobytes)."""
    source = Path(gentity.guest.__file__).parent
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("__main__.py", _MAIN)
        archive.writestr("gentity/__init__.py", _PACKAGE_INIT)
        for path in sorted(source.glob("*.py")):
            archive.writestr(f"gentity/guest/{path.name}", path.read_bytes())
    return out.getvalue()
