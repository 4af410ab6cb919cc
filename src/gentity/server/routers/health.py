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
async def readyz(ctx: Ctx) -> JSONResponse | dict[str, object]:
    """The database answers; otherwise 503 so a load balancer routes elsewhere.

    ``detail`` lists what the compute provider cannot enforce on this host (a missing sandbox
    or network tool): the server still serves, but an operator should know.
    """
    try:
        await ctx.db.ping()
    except Exception as exc:
        log.warning("readiness check failed: %s", exc)
        return JSONResponse({"error": "Database unreachable"}, status_code=503)
    warnings = ctx.compute.isolation_warnings() if ctx.compute is not None else []
    return {"status": "ok", "detail": warnings}
