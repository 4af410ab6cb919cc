"""The sync and async clients stay in step: the same calls, with the same parameters."""

from __future__ import annotations

import inspect
from typing import Any

import pytest

from gentity.client import aio, sync

PAIRS = [
    (sync.Client, aio.AsyncClient),
    (sync.Tokens, aio.AsyncTokens),
    (sync.Instances, aio.AsyncInstances),
]
# Context-manager protocol methods differ by nature (__enter__ / __aenter__), and closing is
# ``close`` / ``aclose`` as in httpx.
PROTOCOL = {"__enter__", "__exit__", "__aenter__", "__aexit__"}
ASYNC_NAME = {"close": "aclose"}


def public_methods(cls: type) -> dict[str, Any]:
    return {
        name: member
        for name, member in inspect.getmembers(cls, inspect.isfunction)
        if (not name.startswith("_") or name == "__init__") and name not in PROTOCOL
    }


def parameters(function: Any) -> list[tuple[str, Any, Any]]:
    """Names, kinds and defaults: what a caller writes must work with both."""
    return [
        (p.name, p.kind, p.default)
        for p in inspect.signature(function).parameters.values()
        if p.name != "self"
    ]


@pytest.mark.parametrize(("sync_cls", "async_cls"), PAIRS, ids=lambda c: c.__name__)
def test_same_methods_with_the_same_parameters(sync_cls: type, async_cls: type) -> None:
    sync_methods, async_methods = public_methods(sync_cls), public_methods(async_cls)
    assert sorted(ASYNC_NAME.get(n, n) for n in sync_methods) == sorted(async_methods)
    for name, function in sync_methods.items():
        if name == "__init__":
            continue  # the async one may take an async transport; checked below by name
        assert parameters(function) == parameters(async_methods[ASYNC_NAME.get(name, name)]), name


def test_constructors_take_the_same_options() -> None:
    sync_names = [name for name, _, _ in parameters(sync.Client.__init__)]
    async_names = [name for name, _, _ in parameters(aio.AsyncClient.__init__)]
    assert sync_names == async_names


@pytest.mark.parametrize(("sync_cls", "async_cls"), PAIRS, ids=lambda c: c.__name__)
def test_every_call_is_awaitable_in_the_async_client(sync_cls: type, async_cls: type) -> None:
    for name, function in public_methods(async_cls).items():
        if name == "__init__":
            continue
        returns = str(inspect.signature(function).return_annotation)
        # A stream (an async iterator) or a terminal to ``await`` / ``async with``.
        deferred = returns in ("AsyncLogStream", "AsyncEventStream", "PendingTerminal")
        assert inspect.iscoroutinefunction(function) or deferred, name
