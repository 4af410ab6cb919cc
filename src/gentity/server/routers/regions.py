"""``GET /api/regions``: where the server's provider can run new instances."""

from __future__ import annotations

from fastapi import APIRouter

from gentity import models
from gentity.server.auth import Auth, AuthFirstRoute, Ctx

router = APIRouter(tags=["regions"], route_class=AuthFirstRoute)


@router.get("/api/regions", response_model=models.RegionList)
async def list_regions(ctx: Ctx, principal: Auth) -> models.RegionList:
    # New instances go to the default provider, so its regions are the ones a create accepts.
    return models.RegionList(
        regions=[models.Region(code=r.code, label=r.label) for r in ctx.providers.default.regions()]
    )
