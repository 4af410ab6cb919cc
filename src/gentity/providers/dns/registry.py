"""DNS providers by name. Built-in ones register here the same way a plugin would."""

from __future__ import annotations

from collections.abc import Callable

from gentity.providers.dns.base import DnsProvider
from gentity.settings import Settings

DnsProviderFactory = Callable[[Settings], DnsProvider]

_FACTORIES: dict[str, DnsProviderFactory] = {}


def register(name: str, factory: DnsProviderFactory) -> None:
    _FACTORIES[name] = factory


def create_dns_provider(settings: Settings) -> DnsProvider:
    _register_builtins()
    try:
        factory = _FACTORIES[settings.dns_provider]
    except KeyError:
        known = ", ".join(sorted(_FACTORIES))
        raise ValueError(
            f"unknown DNS provider {settings.dns_provider!r} (known: {known})"
        ) from None
    return factory(settings)


def _register_builtins() -> None:
    if "none" not in _FACTORIES:
        from gentity.providers.dns.none import NoDns

        register("none", NoDns.from_settings)
    if "cloudflare" not in _FACTORIES:
        from gentity.providers.dns.cloudflare.provider import CloudflareDns

        register("cloudflare", CloudflareDns.from_settings)
