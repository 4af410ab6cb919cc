"""A fake of Fly.io's Machines API and logs API whose machines really run, with a TLS edge.

Run it with ``python -m gentity.testing.fakefly --port P``, or in-process with
:func:`create_app`; docs/fakes.md describes what it emulates and where it deviates.
"""

from gentity.testing.fakefly.app import create_app

__all__ = ["create_app"]
