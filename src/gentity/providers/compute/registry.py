"""Compute providers by name, found through entry points, and the set a server runs with.

A provider is a :class:`ProviderPlugin` named by an entry point of the group
``gentity.compute_providers``: its settings section and its factory. The built-in ``local``
provider is declared in Gentity's own ``pyproject.toml`` exactly as a plugin package would
declare its own::

    [project.entry-points."gentity.compute_providers"]
    fly = "gentity_fly.plugin:plugin"

A server runs the default provider (``GENTITY_COMPUTE_PROVIDER``) and any others enabled with
``GENTITY_COMPUTE_PROVIDERS``; each instance row names the provider that made its machine.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Generic, TypeVar

from pydantic_settings import BaseSettings, SettingsConfigDict

from gentity.providers.compute.base import ComputeProvider, MachineHandle, ProviderUnavailable
from gentity.settings import Settings

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "gentity.compute_providers"

# Found even when the package metadata is stale (an editable install made before the entry
# point was declared, a source tree on PYTHONPATH): the server must not lose its own provider.
_BUILTINS = {"local": "gentity.providers.compute.local.plugin:plugin"}


class ProviderSettings(BaseSettings):
    """A provider's own settings section, read from its ``GENTITY_<NAME>_*`` variables.

    Subclasses set ``model_config = SettingsConfigDict(env_prefix="GENTITY_<NAME>_", …)``; every
    field must be documented in ``docs/configuration.md`` (a test checks).
    """

    model_config = SettingsConfigDict(extra="ignore", frozen=True)


S = TypeVar("S", bound=ProviderSettings)


@dataclass(frozen=True)
class ProviderPlugin(Generic[S]):
    """What an entry point of ``gentity.compute_providers`` names."""

    settings: type[S]
    """The provider's settings section; read from the environment when the provider is made."""
    build: Callable[[Settings, S], ComputeProvider]
    """Makes the provider from the server's settings (data directory, key file…) and its own."""

    def create(self, settings: Settings) -> ComputeProvider:
        return self.build(settings, self.settings())


def _entry_points() -> dict[str, EntryPoint]:
    """Every installed provider's entry point by name; a name claimed twice is an error."""
    found: dict[str, EntryPoint] = {}
    for point in entry_points(group=ENTRY_POINT_GROUP):
        known = found.setdefault(point.name, point)
        if known.value != point.value:
            raise ValueError(
                f"compute provider {point.name!r} is registered twice "
                f"({known.value} and {point.value})"
            )
    for name, value in _BUILTINS.items():
        found.setdefault(name, EntryPoint(name=name, value=value, group=ENTRY_POINT_GROUP))
    return found


def available() -> list[str]:
    """The names of the installed providers, without importing any of them."""
    return sorted(_entry_points())


def load(name: str) -> ProviderPlugin[Any]:
    """The plugin registered as ``name``; ValueError naming the installed ones if none is."""
    points = _entry_points()
    if name not in points:
        raise ValueError(
            f"unknown compute provider {name!r} (installed: {', '.join(sorted(points))})"
        )
    plugin = points[name].load()
    if not isinstance(plugin, ProviderPlugin):
        raise TypeError(
            f"the entry point of compute provider {name!r} ({points[name].value}) "
            "is not a ProviderPlugin"
        )
    return plugin


class Providers:
    """The compute providers this server runs, by name: the default one and the others enabled.

    New instances get the default; an existing instance uses the provider its row names.
    """

    def __init__(self, providers: Mapping[str, ComputeProvider], default: str) -> None:
        if default not in providers:
            raise ValueError(f"the default compute provider {default!r} is not among them")
        for name, provider in providers.items():
            # Instance rows record ``provider.name``, and are looked up by it here.
            if provider.name != name:
                raise ValueError(
                    f"the compute provider registered as {name!r} calls itself {provider.name!r}"
                )
        self._providers = dict(providers)
        self._default = default

    @classmethod
    def from_settings(cls, settings: Settings) -> Providers:
        """Every enabled provider, each made from its own settings section.

        Raises ValueError (unknown provider, invalid settings) so that a misconfigured server
        stops at start-up instead of failing on its first request.
        """
        made = {name: load(name).create(settings) for name in settings.enabled_compute_providers}
        return cls(made, settings.compute_provider)

    @property
    def default(self) -> ComputeProvider:
        """The provider new instances get (``GENTITY_COMPUTE_PROVIDER``)."""
        return self._providers[self._default]

    @property
    def names(self) -> list[str]:
        """The enabled providers' names, the default first."""
        return [self._default, *(n for n in self._providers if n != self._default)]

    def get(self, name: str) -> ComputeProvider:
        """The provider an instance row names; :class:`ProviderUnavailable` when this server
        does not run it (not installed, or not enabled here)."""
        try:
            return self._providers[name]
        except KeyError:
            raise ProviderUnavailable(
                f"this server does not run the {name!r} compute provider "
                f"(it runs: {', '.join(self.names)})"
            ) from None

    def reachable(self, name: str, handle: MachineHandle) -> ComputeProvider:
        """The provider of a machine this server can act on, or :class:`ProviderUnavailable`
        saying why not (its provider is not enabled here, another host runs it)."""
        provider = self.get(name)
        why = provider.unreachable(handle)
        if why is not None:
            raise ProviderUnavailable(why)
        return provider

    def __iter__(self) -> Iterator[ComputeProvider]:
        return (self._providers[name] for name in self.names)

    def __len__(self) -> int:
        return len(self._providers)

    def isolation_warnings(self) -> list[str]:
        """Every provider's warnings, each prefixed with its name when there are several."""
        if len(self) == 1:
            return self.default.isolation_warnings()
        return [
            f"{name}: {warning}"
            for name in self.names
            for warning in self._providers[name].isolation_warnings()
        ]

    async def adopt(self) -> None:
        """Each provider picks up what a previous server process left (see ``adopt``)."""
        for provider in self:
            await provider.adopt()

    async def close(self) -> None:
        """Close every provider, also when one of them fails to (that one is logged)."""
        for name in self.names:
            try:
                await self._providers[name].close()
            except Exception:
                log.exception("closing the %s compute provider failed", name)
