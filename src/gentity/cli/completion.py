"""Shell completion of instance ids and names and agent ids, asked of the server.

These run inside the user's shell on every Tab: each gives up quickly and says nothing when the
server is unreachable, slow or refuses (signed out), offering no candidates instead.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from gentity.client import Client

T = TypeVar("T")

#: Long enough for a distant server, short enough that a dead one does not freeze the shell.
COMPLETION_TIMEOUT = 2.0


def _ask(call: Callable[[Client], list[T]]) -> list[T]:
    try:
        with Client(timeout=COMPLETION_TIMEOUT) as client:
            return call(client)
    except Exception:
        # Whatever went wrong, a traceback or an error line would land in the middle of the
        # command being typed; no candidates is the only acceptable failure.
        return []


def instance_refs(incomplete: str) -> list[tuple[str, str]]:
    """Ids (described by their name) and names (described by their id) starting with
    ``incomplete``: the commands accept either."""
    candidates: list[tuple[str, str]] = []
    for instance in _ask(lambda c: c.instances.list()):
        if instance.id.startswith(incomplete):
            candidates.append((instance.id, instance.name))
        if instance.name.startswith(incomplete) and instance.name != instance.id:
            candidates.append((instance.name, instance.id))
    return candidates


def agent_ids(incomplete: str) -> list[tuple[str, str]]:
    """Agent ids from the catalog (public: completes even when signed out)."""
    return [(a.id, a.name) for a in _ask(lambda c: c.catalog()) if a.id.startswith(incomplete)]
