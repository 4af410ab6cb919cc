"""``/api/instances/{id}/ports``: what an instance listens on, its preview URLs, and which of
them are public. The previews themselves are served by ``web/preview.py``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request
from pydantic import WithJsonSchema

from gentity import models
from gentity.server.auth import Auth, AuthFirstRoute, Ctx, Db
from gentity.server.errors import ApiError
from gentity.server.openapi import errors
from gentity.server.params import whole_number
from gentity.server.services import previews
from gentity.server.web.hosts import preview_origin

router = APIRouter(prefix="/api/instances", tags=["instances"], route_class=AuthFirstRoute)

PortParam = Annotated[
    str,
    Path(description="A TCP port inside the instance"),
    WithJsonSchema({"type": "integer", "minimum": previews.MIN_PORT, "maximum": previews.MAX_PORT}),
]


def _port(raw: str) -> int:
    value = whole_number(raw, previews.MIN_PORT, previews.MAX_PORT)
    if value is None:
        raise ApiError(400, f"port: must be {previews.MIN_PORT}-{previews.MAX_PORT}")
    return value


def _url(request: Request, ctx: Ctx, subdomain: str, port: int) -> str | None:
    origin = preview_origin(request, ctx.settings, subdomain, port)
    return f"{origin}/" if origin else None


@router.get("/{instance_id}/ports", response_model=models.PortList, responses=errors(409, 502))
async def list_ports(
    instance_id: str, request: Request, principal: Auth, ctx: Ctx, db: Db
) -> models.PortList:
    """The TCP ports something listens on inside the running instance, with their preview
    URLs (``<port>-<subdomain>.<host>``) and whether each is public."""
    subdomain, found = await previews.list_ports(ctx, db, principal.user.id, instance_id)
    return models.PortList(
        ports=[
            models.Port(port=port, url=_url(request, ctx, subdomain, port), public=public)
            for port, public in found
        ]
    )


@router.put("/{instance_id}/ports/{port}", response_model=models.Port)
async def update_port(
    instance_id: str,
    port: PortParam,
    body: models.PortUpdateRequest,
    request: Request,
    principal: Auth,
    ctx: Ctx,
    db: Db,
) -> models.Port:
    """Make a port's preview public (anyone with the URL gets through) or the owner's only
    again. Kept across restarts, whether or not anything listens on the port yet."""
    number = _port(port)
    subdomain = await previews.set_public(db, principal.user.id, instance_id, number, body.public)
    return models.Port(port=number, url=_url(request, ctx, subdomain, number), public=body.public)
