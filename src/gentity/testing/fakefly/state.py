"""The fake's records: apps, volumes, machines, leases; serialised as the real API returns them."""

from __future__ import annotations

import asyncio
import copy
import hashlib
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gentity.testing.fakefly import ids
from gentity.testing.fakefly.errors import FlyError, not_found
from gentity.testing.fakefly.runner import Sandbox

Json = dict[str, Any]


@dataclass
class Lease:
    nonce: str
    owner: str
    description: str
    expires_at: float
    version: str

    def active(self) -> bool:
        return self.expires_at > time.time()

    def held_by_other(self, machine_id: str, nonce: str | None) -> FlyError | None:
        """The 409 the real API answers a mutation without this lease's nonce, or None."""
        if not self.active() or nonce == self.nonce:
            return None
        expires = ids.iso(self.expires_at)
        return FlyError(
            409,
            f"aborted: machine ID {machine_id} lease currently held by {self.owner}, "
            f"expires at {expires}",
        )

    def to_json(self) -> Json:
        return {
            "nonce": self.nonce,
            "expires_at": int(self.expires_at),
            "owner": self.owner,
            "description": self.description,
            "version": self.version,
        }


@dataclass
class Machine:
    id: str
    app: str
    name: str
    region: str
    config: Json
    private_ip: str
    version: str = field(default_factory=ids.ulid)
    state: str = "created"
    created_at: str = field(default_factory=ids.iso)
    updated_at: str = field(default_factory=ids.iso)
    events: list[Json] = field(default_factory=list)
    """Newest first."""
    lease: Lease | None = None
    cordoned: bool = False
    sandbox: Sandbox | None = None
    stop_requested: bool = False
    exit_code: int | None = None
    restarts: int = 0
    task: asyncio.Task[None] | None = None
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def set_state(self, state: str) -> None:
        self.state = state
        self.updated_at = ids.iso()
        async with self.changed:
            self.changed.notify_all()

    def event(self, kind: str, status: str, source: str = "user", **request: Any) -> None:
        entry: Json = {
            "id": ids.ulid(),
            "type": kind,
            "status": status,
            "source": source,
            "timestamp": ids.now_ms(),
        }
        if request:
            entry["request"] = request
        self.events.insert(0, entry)

    def active_lease(self) -> Lease | None:
        return self.lease if self.lease is not None and self.lease.active() else None

    def to_json(self, *, summary: bool = False) -> Json:
        body: Json = {
            "id": self.id,
            "name": self.name,
            "state": self.state,
            "region": self.region,
            "instance_id": self.version,
            "version": self.version,
            "private_ip": self.private_ip,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "host_status": "ok",
            "cordoned": self.cordoned,
            "image_ref": _image_ref(str(self.config.get("image", ""))),
        }
        if not summary:
            body["config"] = copy.deepcopy(self.config)
            body["events"] = self.events[:10]
            body["checks"] = []
        return body


@dataclass
class Volume:
    id: str
    app: str
    name: str
    region: str
    size_gb: int
    encrypted: bool
    path: Path
    """The directory standing in for the volume's filesystem."""
    state: str = "created"
    attached_machine_id: str | None = None
    created_at: str = field(default_factory=ids.iso)
    zone: str = field(default_factory=lambda: secrets.token_hex(2))

    def to_json(self) -> Json:
        return {
            "id": self.id,
            "name": self.name,
            "state": self.state,
            "size_gb": self.size_gb,
            "region": self.region,
            "zone": self.zone,
            "encrypted": self.encrypted,
            "attached_machine_id": self.attached_machine_id,
            "attached_alloc_id": None,
            "created_at": self.created_at,
            "fstype": "ext4",
            "snapshot_retention": 5,
            "auto_backup_enabled": True,
            "host_status": "ok",
            "host_dedication_key": "",
        }


@dataclass
class App:
    id: str
    name: str
    org_slug: str
    network: str
    numeric_id: int
    created_at: int = field(default_factory=ids.now_ms)
    machines: dict[str, Machine] = field(default_factory=dict)
    volumes: dict[str, Volume] = field(default_factory=dict)
    ips: list[Json] = field(default_factory=list)

    def machine(self, machine_id: str) -> Machine:
        machine = self.machines.get(machine_id)
        if machine is None:
            raise not_found("machine")
        return machine

    def volume(self, volume_id: str) -> Volume:
        volume = self.volumes.get(volume_id)
        if volume is None or volume.state == "destroyed":
            raise not_found("volume")
        return volume

    def to_json(self) -> Json:
        live = [m for m in self.machines.values() if m.state != "destroyed"]
        return {
            "id": self.id,
            "name": self.name,
            "status": "deployed" if live else "pending",
            "network": self.network,
            "internal_numeric_id": self.numeric_id,
            "machine_count": len(live),
            "volume_count": sum(v.state != "destroyed" for v in self.volumes.values()),
            "organization": {"name": self.org_slug, "slug": self.org_slug},
            "created_at": self.created_at,
        }


def private_ip(app: App, machine_id: str) -> str:
    """A 6PN-looking address, stable per machine: ``fdaa:<org>:<app>:...``."""
    digest = hashlib.sha256(f"{app.network}/{machine_id}".encode()).hexdigest()
    return f"fdaa:0:{app.numeric_id % 0xFFFF:x}:a7b:{digest[:4]}:{digest[4:8]}:{digest[8:12]}:2"


def _image_ref(image: str) -> Json:
    name, _, digest = image.partition("@")
    repository, _, tag = name.partition(":")
    registry, _, path = repository.partition("/")
    if "." not in registry or not path:
        registry, path = "registry-1.docker.io", repository
    return {
        "registry": registry,
        "repository": path,
        "tag": tag or ("" if digest else "latest"),
        "digest": digest,
        "labels": {},
    }
