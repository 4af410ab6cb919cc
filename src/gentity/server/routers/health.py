"""Liveness and readiness probes for load balancers and orchestrators."""

from __future__ import annotations

import logging
import time

from fastapi import APIRouter
from starlette.responses import JSONResponse

from gentity.server.auth import Ctx
from gentity.server.openapi import errors

router = APIRouter(tags=["health"])
log = logging.getLogger(__name__)


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up and serving. Touches nothing else (not the database): a liveness
    probe that failed with the database would have every replica restarted for nothing."""
    return {"status": "ok"}


@router.get("/readyz", response_model=None, responses=errors(503))
async def readyz(ctx: Ctx) -> JSONResponse | dict[str, object]:
    """The database answers within its statement timeout; otherwise 503 so a load balancer
    routes elsewhere.

    ``database`` says how long the round trip took; ``detail`` lists what the compute providers
    cannot enforce on this host (a missing sandbox or network tool): the server still serves,
    but an operator should know.
    """
    started = time.monotonic()
    try:
        await ctx.db.ping()
    except Exception as exc:
        log.warning("readiness check failed: %s", exc)
        return JSONResponse(
            {"error": "Database unreachable"}, status_code=503, headers={"Retry-After": "5"}
        )
    elapsed_ms = round((time.monotonic() - started) * 1000, 1)
    warnings = ctx.providers.isolation_warnings()
    return {
        "status": "ok",
        "database": {"status": "ok", "latencyMs": elapsed_ms},
        "detail": warnings,
    }
