"""Reading requests the way the real API does: lenient JSON bodies, Go-style booleans."""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request

from gentity.testing.fakefly.errors import bad_request

NONCE_HEADER = "fly-machine-lease-nonce"


async def json_body(request: Request) -> dict[str, Any]:
    """The request's JSON object; an empty body is an empty object."""
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except ValueError:
        raise bad_request("invalid JSON body") from None
    if not isinstance(body, dict):
        raise bad_request("request body must be a JSON object")
    return body


def flag(request: Request, name: str) -> bool:
    return request.query_params.get(name, "").lower() in ("1", "true", "t", "yes")


def token_owner(request: Request) -> str:
    """Who a token belongs to, as lease owners are shown: stable per token, never the token."""
    return str(request.state.owner)
