"""The OpenAPI document at ``/api/openapi.json``, made to describe what the server really does.

FastAPI's own document promises a 422 on every operation (this server answers 400 instead) and
knows nothing of the error body, of authentication, or of the answers that middleware gives
before a route runs. This module rewrites it from what each route is made of:

- every operation lists the error statuses it can answer, each with the ``{"error": "..."}``
  body, and no others: 401 when it needs a credential, 400 when it reads a body, a query or a
  header, 413 when it reads a body, 403 when its method is unsafe (the cross-origin guard),
  404 when its path names something, 503 when it touches the database, plus what the route
  declares itself with :func:`errors` (a 409 for a state conflict, a 502 from upstream, ...);
- the bearer token and the session cookie are security schemes, and each operation says
  whether it needs one of them.

``tests/server/test_openapi.py`` holds the server to this document with schemathesis.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute, RouteContext, iter_route_contexts

from gentity.server.auth import SESSION_COOKIE, db_session, require_principal
from gentity.server.middleware import SAFE_METHODS

ERROR_SCHEMA: dict[str, Any] = {
    "title": "Error",
    "type": "object",
    "properties": {"error": {"type": "string", "minLength": 1}},
    "required": ["error"],
    "additionalProperties": False,
}

_ERROR_REF = {"$ref": "#/components/schemas/Error"}

# Why each status is answered, worded for the reader of the document.
_REASONS = {
    400: "Validation failure; the message names the field or parameter",
    401: "Missing, malformed, revoked or expired credential",
    403: "Refused: a cross-origin browser request, or an action this caller may not take",
    404: "Not found, or not yours",
    409: "The current state does not allow this",
    413: "Request body over the size limit",
    422: "Idempotency-Key already used for a different request",
    429: "Too many failed sign-in attempts; see Retry-After",
    502: "The machine or the agent failed; the message says why",
    503: "Temporarily unavailable (most often the database); try again shortly",
}

SECURITY_SCHEMES: dict[str, Any] = {
    "bearerToken": {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "gn_live_…",
        "description": "An API token (POST /api/tokens). Wins over the cookie when both are sent.",
    },
    "sessionCookie": {
        "type": "apiKey",
        "in": "cookie",
        "name": SESSION_COOKIE,
        "description": "The session cookie set by POST /api/auth/login (named "
        "__Host-gentity_session over https). Unsafe methods must come from this server's origin.",
    },
}
_AUTHENTICATED: list[dict[str, list[str]]] = [{"bearerToken": []}, {"sessionCookie": []}]


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """Error answers peculiar to one route, for its decorator's ``responses=``; the common
    ones (401, 400, 403, 404, 413, 503) follow from the route's shape and need no mention."""
    return {status: _error_response(status) for status in statuses}


def install_openapi(app: FastAPI) -> None:
    """Serve the rewritten document (built once, on first request) as ``app.openapi()``."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _document(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _document(app: FastAPI) -> dict[str, Any]:
    spec = get_openapi(
        title=app.title,
        version=app.version,
        summary=app.summary,
        routes=app.routes,
    )
    for route in _api_routes(app):
        for method in route.methods or ():
            operation = spec["paths"][str(route.path_format)].get(method.lower())
            if operation is not None:
                _describe(operation, route, method)
    components = spec.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    # Only FastAPI's 422 referred to these; nothing is answered in their shape.
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    schemas["Error"] = ERROR_SCHEMA
    components["securitySchemes"] = SECURITY_SCHEMES
    return spec


def _api_routes(app: FastAPI) -> Iterator[RouteContext]:
    # Included routers are resolved lazily; a context is a route as mounted (with its prefix).
    for route in iter_route_contexts(app.routes):
        if isinstance(route.original_route, APIRoute) and route.include_in_schema:
            yield route


def _describe(operation: dict[str, Any], route: RouteContext, method: str) -> None:
    calls = set(_calls(route.dependant))
    authenticated = require_principal in calls
    statuses = {int(s) for s in route.responses if str(s).isdigit() and int(s) >= 400}
    if authenticated:
        statuses.add(401)
    if route.body_field is not None:
        statuses |= {400, 413}
    if _has_params(route.dependant, "query_params") or _has_params(
        route.dependant, "header_params"
    ):
        statuses.add(400)
    if method not in SAFE_METHODS:
        statuses.add(403)
    if _has_params(route.dependant, "path_params"):
        statuses.add(404)
    if authenticated or db_session in calls:
        statuses.add(503)
    responses = operation["responses"]
    responses.pop("422", None)
    for status in sorted(statuses):
        responses[str(status)] = _error_response(status)
    operation["security"] = _AUTHENTICATED if authenticated else []


def _has_params(dependant: Dependant, kind: str) -> bool:
    return any(getattr(d, kind) for d in _dependants(dependant))


def _dependants(dependant: Dependant) -> Iterator[Dependant]:
    yield dependant
    for sub in dependant.dependencies:
        yield from _dependants(sub)


def _calls(dependant: Dependant) -> Iterator[Callable[..., Any]]:
    for sub in _dependants(dependant):
        if sub.call is not None:
            yield sub.call


# Sign-in limits and database outages say when to try again; documented as optional, since a
# 503 for another cause may not.
_RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before trying again",
        "schema": {"type": "integer", "minimum": 0},
    }
}
_RETRYABLE = frozenset({429, 503})


def _error_response(status: int) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": _REASONS[status],
        "content": {"application/json": {"schema": _ERROR_REF}},
    }
    if status in _RETRYABLE:
        response["headers"] = _RETRY_AFTER
    return response
