"""Preview ports: what an instance listens on, who may reach it, and the way in.

Anything the agent serves on a TCP port inside its instance is reachable at
``<port>-<subdomain>.<host>``; the control plane proxies it through the instance's guest, so
it works on every provider. Only the owner gets through unless the owner made the port public
(an ``instance_ports`` row); the HTTP side of that rule is ``web/preview.py``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from gentity.guest import client as guest_client
from gentity.models import InstanceStatus
from gentity.server.context import AppContext
from gentity.server.db.ids import utcnow
from gentity.server.db.orm import Instance, InstancePort
from gentity.server.services import instances
from gentity.server.services.errors import Conflict, InvalidInput, UpstreamFailed

MIN_PORT = 1
MAX_PORT = 65535


@dataclass(frozen=True)
class Target:
    """The instance a preview host names, as far as the proxy needs it."""

    instance_id: str
    user_id: str
    status: str
    public: bool
    """The port was made public by the owner: anyone gets through."""


def check_port(port: int) -> int:
    if not MIN_PORT <= port <= MAX_PORT:
        raise InvalidInput(f"port: must be {MIN_PORT}-{MAX_PORT}")
    return port


def _running(row: Instance) -> None:
    if row.status != InstanceStatus.RUNNING.value:
        raise Conflict(f"the instance is {row.status}; start it first")


async def public_ports(db: AsyncSession, instance_id: str) -> set[int]:
    rows = await db.scalars(
        select(InstancePort.port).where(
            InstancePort.instance_id == instance_id, InstancePort.public.is_(True)
        )
    )
    return set(rows)


async def list_ports(
    ctx: AppContext, db: AsyncSession, user_id: str, instance_id: str
) -> tuple[str, list[tuple[int, bool]]]:
    """The instance's subdomain and ``(port, public)`` for every port something listens on
    in the caller's running instance, lowest first. Conflict when it is not running."""
    row = await instances.get_owned(db, user_id, instance_id)
    _running(row)
    public = await public_ports(db, row.id)
    endpoint = instances.provider_for(ctx, row).guest_endpoint(instances.handle_of(row))
    try:
        found = await guest_client.ports(endpoint, instances.guest_secret(ctx, row))
    except guest_client.GuestError as exc:
        raise UpstreamFailed(str(exc).replace(f" at {endpoint.address}", "")) from exc
    return row.subdomain, [(port, port in public) for port in found]


async def set_public(
    db: AsyncSession, user_id: str, instance_id: str, port: int, public: bool
) -> str:
    """Open ``port``'s preview to everyone, or back to the owner only. Allowed in any state
    (it is kept for when the instance runs), and whether or not anything listens yet."""
    check_port(port)
    row = await instances.get_owned(db, user_id, instance_id)
    await db.execute(
        delete(InstancePort).where(InstancePort.instance_id == row.id, InstancePort.port == port)
    )
    if public:
        db.add(InstancePort(instance_id=row.id, port=port, public=True, updated_at=utcnow()))
    subdomain = row.subdomain
    await db.commit()
    return subdomain


async def find_target(db: AsyncSession, subdomain: str, port: int) -> Target | None:
    """The live instance with that subdomain, whoever owns it, and whether ``port`` is
    public; None when there is none. The caller decides who may go on."""
    row = await db.scalar(
        select(Instance).where(Instance.subdomain == subdomain, Instance.destroyed_at.is_(None))
    )
    if row is None:
        return None
    public = port in await public_ports(db, row.id)
    return Target(row.id, row.user_id, row.status, public)


async def open_port(
    ctx: AppContext, instance_id: str, port: int
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection to ``port`` inside the running instance, through its guest. Conflict when
    the instance does not run, UpstreamFailed when nothing listens there. Holds no database
    session once it returns."""
    async with ctx.db.session() as db:
        row = await db.get(Instance, instance_id)
        if row is None or row.destroyed_at is not None:
            raise Conflict("the instance is gone")
        _running(row)
        db.expunge(row)
    endpoint = instances.provider_for(ctx, row).guest_endpoint(instances.handle_of(row))
    try:
        return await guest_client.open_port(endpoint, instances.guest_secret(ctx, row), port)
    except guest_client.GuestError as exc:
        message = str(exc).replace(f" at {endpoint.address}", "")
        raise UpstreamFailed(message.replace("guest: ", "")) from exc
