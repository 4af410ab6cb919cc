"""Compute providers by name. Built-in ones register here the same way a plugin would."""

from __future__ import annotations

from collections.abc import Callable

from gentity.providers.compute.base import ComputeProvider
from gentity.settings import Settings

ProviderFactory = Callable[[Settings], ComputeProvider]

_FACTORIES: dict[str, ProviderFactory] = {}


def register(name: str, factory: ProviderFactory) -> None:
    _FACTORIES[name] = factory


def create_provider(settings: Settings) -> ComputeProvider:
    _register_builtins()
    try:
        factory = _FACTORIES[settings.compute_provider]
    except KeyError:
        known = ", ".join(sorted(_FACTORIES))
        raise ValueError(
            f"unknown compute provider {settings.compute_provider!r} (known: {known})"
        ) from None
    return factory(settings)


def _register_builtins() -> None:
    if "local" not in _FACTORIES:
        from gentity.providers.compute.local.provider import LocalProvider

        register("local", LocalProvider.from_settings)
