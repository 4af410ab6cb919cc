"""``GET /api/catalog/agents``: public, no authentication."""

from __future__ import annotations

from fastapi import APIRouter

from gentity import models
from gentity.server.auth import Ctx

router = APIRouter(tags=["catalog"])


@router.get("/api/catalog/agents", response_model=models.AgentCatalog, response_model_by_alias=True)
async def list_agents(ctx: Ctx) -> models.AgentCatalog:
    return ctx.catalog.to_wire()
