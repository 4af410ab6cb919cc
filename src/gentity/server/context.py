"""What every request handler can reach: settings, database, secret box, catalog, providers."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from gentity.catalog import Catalog
from gentity.providers.compute.registry import Providers
from gentity.providers.dns.base import DnsProvider
from gentity.server.db.database import Database
from gentity.server.metrics import Metrics
from gentity.server.node import NodeIdentity
from gentity.server.revocation import CredentialWatch
from gentity.server.security.crypto import SecretBox
from gentity.server.services.logfeed import Feeds
from gentity.settings import Settings


@dataclass
class AppContext:
    settings: Settings
    db: Database
    box: SecretBox
    catalog: Catalog
    providers: Providers
    """The compute providers this server runs; an instance uses the one its row names."""
    dns: DnsProvider
    """Makes and removes instances' subdomain records (``none`` locally)."""
    background: set[asyncio.Task[Any]] = field(default_factory=set)
    """Operations that outlive the request that started them (kept referenced until done)."""
    operations: dict[str, set[asyncio.Task[str | None]]] = field(default_factory=dict)
    """This process's operations in flight, by instance: a destroy cancels them."""
    destroying: dict[str, asyncio.Task[str | None]] = field(default_factory=dict)
    """This process's destroys in flight, by instance: a second DELETE waits for the first."""
    watches: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    """The guest watches of ``server.recovery``, by instance."""
    heard: dict[str, dict[str, Any]] = field(default_factory=dict)
    """The health each live watch last heard from its guest, by instance. A guest answers its
    watch at every change, so this is what the guest would say if asked now: the instance list
    shows it instead of asking every guest per request (``services.instances.agent_health``)."""
    node: NodeIdentity | None = None
    """Who this server is in ``Instance.operation_owner`` (see ``server.node``)."""
    metrics: Metrics = field(default_factory=Metrics)
    """Counters and timings served at ``/metrics`` (see ``server.metrics``)."""
    logfeeds: Feeds = field(default_factory=Feeds)
    """This process's shared log follow streams, by instance (see ``services.logfeed``)."""
    credentials: CredentialWatch = field(init=False)
    """Open streams by credential, ended when it is revoked (see ``revocation``)."""

    def __post_init__(self) -> None:
        self.credentials = CredentialWatch(self.db)
