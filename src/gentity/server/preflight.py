"""Checks ``gentity serve`` makes before it starts: outside services that cannot work stop the
server with one clear line, instead of failing every create later."""

from __future__ import annotations

from gentity.providers.dns.base import DnsError
from gentity.providers.dns.registry import create_dns_provider
from gentity.settings import Settings


class StartupError(Exception):
    """The server cannot start as configured; the message says why, in one line."""


async def preflight(settings: Settings) -> None:
    """Raise :class:`StartupError` when the configured DNS provider cannot be used."""
    await _check_dns(settings)


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
