"""Liveness and readiness probes for load balancers and orchestrators."""

from __future__ import annotations

import logging

from fastapi import APIRouter
from starlette.responses import JSONResponse

from gentity.server.auth import Ctx

router = APIRouter(tags=["health"])
log = logging.getLogger(__name__)


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up and serving."""
    return {"status": "ok"}


@router.get("/readyz", response_model=None)
async def readyz(ctx: Ctx) -> JSONResponse | dict[str, str]:
    """The database answers; otherwise 503 so a load balancer routes elsewhere."""
    try:
        await ctx.db.ping()
    except Exception as exc:
        log.warning("readiness check failed: %s", exc)
        return JSONResponse({"error": "Database unreachable"}, status_code=503)
    return {"status": "ok"}
