"""The local provider's settings: ``GENTITY_LOCAL_*`` variables."""

from __future__ import annotations

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from gentity.providers.compute.local import uids
from gentity.providers.compute.registry import ProviderSettings


class LocalSettings(ProviderSettings):
    """How the ``local`` provider runs instances on this host."""

    model_config = SettingsConfigDict(env_prefix="GENTITY_LOCAL_", extra="ignore", frozen=True)

    warm_spares: int = Field(default=1, ge=0, le=16)
    """How many sandboxes the local provider keeps started ahead of need, so that creating an
    instance does not wait for its guest daemon to start. 0 turns it off."""

    uid_range: str = "1000000-1999999"
    """Host uids the local provider gives instances, one each, when the server runs as root
    (``FIRST-LAST``). Root inside an instance is that uid outside it. Servers sharing a host
    share the claims, in ``/var/lib/gentity/uids``."""

    host_id: str | None = Field(default=None, min_length=1, max_length=128)
    """Who this server is as the owner of local instances (see ``ownership``). Unset, a random
    id kept in the data directory (``host-id``)."""

    @field_validator("uid_range")
    @classmethod
    def _uid_range(cls, value: str) -> str:
        uids.parse_range(value)  # raises ValueError with the reason
        return value
