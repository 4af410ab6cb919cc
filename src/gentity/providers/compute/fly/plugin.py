"""The ``fly`` provider as the registry finds it (``gentity.compute_providers`` entry point)."""

from __future__ import annotations

from gentity.providers.compute.fly.provider import FlyProvider
from gentity.providers.compute.fly.settings import FlySettings
from gentity.providers.compute.registry import ProviderPlugin

plugin = ProviderPlugin(settings=FlySettings, build=FlyProvider.from_settings)
