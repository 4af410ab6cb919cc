"""The ``local`` provider as the registry finds it (``gentity.compute_providers`` entry point)."""

from __future__ import annotations

from gentity.providers.compute.local.provider import LocalProvider
from gentity.providers.compute.local.settings import LocalSettings
from gentity.providers.compute.registry import ProviderPlugin

plugin = ProviderPlugin(settings=LocalSettings, build=LocalProvider.from_settings)
