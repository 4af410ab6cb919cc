"""The fly provider's settings: ``GENTITY_FLY_*`` variables."""

from __future__ import annotations

import re

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict

from gentity.providers.compute.fly.api import LOGS_URL, MACHINES_URL
from gentity.providers.compute.registry import ProviderSettings

# Fly app names: lowercase letters, digits and dashes. The prefix is followed by an instance
# id, and the whole name must stay within Fly's 63 characters.
_PREFIX = re.compile(r"[a-z][a-z0-9-]{0,29}")


class FlySettings(ProviderSettings):
    """How the ``fly`` provider reaches Fly.io and what its machines run."""

    model_config = SettingsConfigDict(env_prefix="GENTITY_FLY_", extra="ignore", frozen=True)

    api_url: str = MACHINES_URL
    """The Machines API."""
    logs_url: str = LOGS_URL
    """The logs API, read for the log of a stopped machine."""
    api_token: SecretStr | None = None
    """A Fly API token for the organization (``fly tokens create org``). Required."""
    org: str = "personal"
    """The organization slug instance apps are created in."""
    region: str = "iad"
    """Where instances go when their request names no region."""
    image: str | None = None
    """The guest image, built from ``deploy/guest/Dockerfile``. Unset, a stock image with
    ``python3`` and ``node`` (``stock_image``) into which the provider writes the guest."""
    stock_image: str = "nikolaik/python-nodejs:python3.12-nodejs22-slim"
    """The image used when ``image`` is unset: any with ``python3`` (3.11 or later) and
    ``node`` on its PATH."""
    edge: str | None = None
    """``host:port`` to reach instances at instead of ``<app>.fly.dev:443`` (the fake's edge)."""
    ca_file: str | None = None
    """An extra CA certificate (PEM) trusted for the edge, besides the system's."""
    app_prefix: str = Field(default="gentity-")
    """Apps are named this followed by the instance id; the orphan sweep deletes only apps
    with this prefix. Servers sharing a Fly organization but not a database need their own."""

    @field_validator("app_prefix")
    @classmethod
    def _app_prefix(cls, value: str) -> str:
        if not _PREFIX.fullmatch(value):
            raise ValueError(
                "must start with a lowercase letter, then up to 29 lowercase letters, "
                "digits or dashes"
            )
        return value

    @field_validator("edge")
    @classmethod
    def _edge(cls, value: str | None) -> str | None:
        if value is not None:
            host, sep, port = value.rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError("must be host:port")
        return value
