"""``GET /metrics``: Prometheus metrics, for a scraper that holds ``GENTITY_METRICS_TOKEN``.

Off unless that setting is set (then the path answers 404 like any unknown one). The token is
its own credential, not a user's API token: a monitoring system gets to read counters, nothing
else. It is compared in constant time, on digests, so neither its content nor its length leaks.
Left out of the OpenAPI document, which describes the user-facing API.
"""

from __future__ import annotations

import hashlib
import hmac

from fastapi import APIRouter, Request
from starlette.responses import Response

from gentity.server.auth import Ctx
from gentity.server.errors import unauthorized
from gentity.server.metrics import CONTENT_TYPE
from gentity.server.services.errors import NotFound

router = APIRouter(include_in_schema=False)


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode()).digest()


@router.get("/metrics")
async def metrics(request: Request, ctx: Ctx) -> Response:
    expected = ctx.settings.metrics_token
    if expected is None:
        raise NotFound()
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        _digest(given.strip()), _digest(expected.get_secret_value())
    ):
        raise unauthorized()
    body = await ctx.metrics.render(ctx.db, ctx.credentials)
    return Response(body, media_type=CONTENT_TYPE, headers={"Cache-Control": "no-store"})
