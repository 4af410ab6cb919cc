"""Checks ``gentity serve`` makes before it starts: outside services that cannot work stop the
server with one clear line, instead of failing every create later."""

from __future__ import annotations

from gentity.providers.compute.base import ProviderError
from gentity.providers.compute.registry import Providers
from gentity.providers.dns.base import DnsError
from gentity.providers.dns.registry import create_dns_provider
from gentity.settings import Settings


class StartupError(Exception):
    """The server cannot start as configured; the message says why, in one line."""


async def preflight(settings: Settings) -> None:
    """Raise :class:`StartupError` when a compute provider or the configured DNS provider
    cannot be used."""
    await _check_compute(settings)
    await _check_dns(settings)


async def _check_compute(settings: Settings) -> None:
    try:
        providers = Providers.from_settings(settings)
    except ValueError as exc:
        raise StartupError(str(exc)) from None
    try:
        for provider in providers:
            await provider.verify()
    except ProviderError as exc:
        raise StartupError(f"the {provider.name} compute provider cannot be used: {exc}") from None
    finally:
        await providers.close()


async def _check_dns(settings: Settings) -> None:
    if settings.dns_provider == "none":
        return
    if settings.instance_domain is None:
        raise StartupError(
            f"GENTITY_DNS_PROVIDER={settings.dns_provider} needs GENTITY_BASE_DOMAIN "
            "(or GENTITY_PUBLIC_URL) to name instance records"
        )
    try:
        dns = create_dns_provider(settings)
    except (ValueError, DnsError) as exc:
        raise StartupError(f"DNS provider {settings.dns_provider}: {exc}") from None
    try:
        await dns.verify()
    except DnsError as exc:
        raise StartupError(
            f"the {settings.dns_provider} DNS provider cannot be used: {exc}"
        ) from None
    finally:
        await dns.close()
