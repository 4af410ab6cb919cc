"""What the user typed for an instance or a token, turned into the record it names.

The API takes exact ids only. People type less: a unique start of an id (``cl-a``), or an
instance's name. Instances are resolved here, client-side, from the caller's own list, and a
"not found" names what was asked for instead of the server's bare ``Not Found (404)``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from gentity import models
from gentity.cli.output import fail
from gentity.client import ApiError, Client

#: How many candidates an "ambiguous" error lists before it says "and N more".
MAX_CANDIDATES = 5


def find_instance(client: Client, ref: str) -> models.Instance:
    """The instance ``ref`` names: its id, a unique prefix of its id, or its name.

    An exact id always wins. Otherwise every instance whose name is ``ref`` or whose id starts
    with it is a candidate; exactly one must remain, else the error lists them.
    """
    instances = client.instances.list()
    exact = next((i for i in instances if i.id == ref), None)
    if exact is not None:
        return exact
    candidates = [i for i in instances if ref and (i.name == ref or i.id.startswith(ref))]
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        fail(not_found_message(ref))
    shown = ", ".join(f"{i.id} ({i.name})" for i in candidates[:MAX_CANDIDATES])
    more = len(candidates) - MAX_CANDIDATES
    if more > 0:
        shown += f" and {more} more"
    fail(f'"{ref}" matches {len(candidates)} instances: {shown}; give more of the id')


def not_found_message(ref: str) -> str:
    return f'no instance "{ref}" (see: gentity compute ls)'


@contextmanager
def instance_gone(ref: str) -> Iterator[None]:
    """Say which instance vanished when it is destroyed between resolving it and using it."""
    try:
        yield
    except ApiError as exc:
        if exc.status != 404:
            raise
        fail(not_found_message(ref))


@contextmanager
def token_not_found(token_id: str) -> Iterator[None]:
    """A 404 from a token route names the token that was asked for."""
    try:
        yield
    except ApiError as exc:
        if exc.status != 404:
            raise
        fail(f'no token "{token_id}" (see: gentity tokens ls)')
