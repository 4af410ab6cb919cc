"""The one error contract: every 4xx and 5xx body is ``{"error": "..."}``."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import iter_route_contexts
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse

from gentity.providers.compute.base import ProviderError, ProviderUnavailable
from gentity.server.db.bounded import DatabaseUnavailable
from gentity.server.services.errors import (
    Conflict,
    DomainError,
    Forbidden,
    InvalidInput,
    Mismatch,
    NotFound,
    RateLimited,
    Unauthenticated,
    Unavailable,
    UpstreamFailed,
)

log = logging.getLogger(__name__)


class ApiError(Exception):
    """Raise in the HTTP layer (parsing, authentication) to answer ``status`` with
    ``{"error": message}``. Services raise :mod:`~gentity.server.services.errors` instead."""

    def __init__(
        self, status: int, message: str, *, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


def unauthorized() -> ApiError:
    # One body for every authentication failure: missing, malformed, revoked, expired.
    return ApiError(401, "Unauthorized")


# The one table from what went wrong below the routers to the contract's status codes.
STATUS: dict[type[Exception], int] = {
    InvalidInput: 400,
    Unauthenticated: 401,
    Forbidden: 403,
    NotFound: 404,
    Conflict: 409,
    Mismatch: 422,
    RateLimited: 429,
    UpstreamFailed: 502,
    # The provider's message is written for the user (see its docstring): an upstream failure.
    ProviderError: 502,
    Unavailable: 503,
    # Another server (another host's, or one that runs the provider) can act on the machine.
    ProviderUnavailable: 503,
}

Answer = tuple[int, str, dict[str, str]]
"""An error answer: status, message, headers."""


Answerable = ApiError | DomainError | ProviderError | ProviderUnavailable
"""What the HTTP layer answers through :func:`answer_for`."""


def answer_for(exc: Answerable) -> Answer:
    """The status, message and headers that answer ``exc``, from :data:`STATUS`."""
    if isinstance(exc, ApiError):
        return exc.status, exc.message, exc.headers
    status = next(STATUS[kind] for kind in type(exc).__mro__ if kind in STATUS)
    retry_after = getattr(exc, "retry_after", None)
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
    return status, str(exc), headers


DATABASE_UNAVAILABLE = "The database is unavailable; try again shortly"


def is_database_outage(exc: BaseException) -> bool:
    """Whether ``exc`` means the database cannot be reached or did not answer in time (not a
    bug in a query): refused or dropped connections, a full pool, a timeout, a full disk."""
    if isinstance(exc, DatabaseUnavailable | sa_exc.TimeoutError):
        return True
    if isinstance(exc, sa_exc.DBAPIError):
        return exc.connection_invalidated or isinstance(
            exc, sa_exc.OperationalError | sa_exc.InterfaceError
        )
    return False


def error_response(
    status: int, message: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=dict(headers or {}))


def describe_validation_error(errors: list[Any]) -> str:
    """A readable message naming the offending field, from pydantic's error list."""
    first = errors[0] if errors else {}
    kind = first.get("type", "")
    if kind == "json_invalid":
        return "Malformed JSON body"
    loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path", "header")]
    field = ".".join(loc)
    if kind == "missing" and not field:
        return "Request body is required"
    if kind == "extra_forbidden":
        return f"Unknown field: {field}"
    if kind == "missing":
        return f"{field}: field required"
    if kind == "model_attributes_type" or (kind == "dict_type" and not field):
        return "Request body must be a JSON object"
    message = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    return f"{field}: {message}" if field else message


def install_error_handlers(app: FastAPI) -> None:
    async def _answer(_: Request, exc: Answerable) -> JSONResponse:
        return error_response(*answer_for(exc))

    for answered in (ApiError, DomainError, ProviderError, ProviderUnavailable):
        app.exception_handler(answered)(_answer)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(400, describe_validation_error(list(exc.errors())))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = ", ".join(allowed_methods(request.app, request.scope["path"]))
        return error_response(exc.status_code, message, headers)

    async def _database(request: Request, exc: Exception) -> JSONResponse:
        # Handled here rather than by the catch-all below, which Starlette runs outside every
        # middleware (and then re-raises): an outage is an answer, not a crash.
        if not is_database_outage(exc):
            return await _unhandled(request, exc)
        # The operator needs the driver's message; the client only needs to retry.
        log.warning("database unavailable on %s %s: %s", request.method, request.url.path, exc)
        return error_response(503, DATABASE_UNAVAILABLE, {"Retry-After": "5"})

    for kind in (DatabaseUnavailable, sa_exc.TimeoutError, sa_exc.DBAPIError):
        app.add_exception_handler(kind, _database)

    @app.exception_handler(Exception)
    async def _unhandled(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "Internal Server Error")


def allowed_methods(app: FastAPI, path: str) -> list[str]:
    """Every method some route answers on ``path``.

    Each method of a path is a route of its own, and Starlette's 405 names only the first
    route whose path matched: ``Allow`` would say ``GET`` where ``POST`` works too.
    """
    methods: set[str] = set()
    for route in iter_route_contexts(app.routes):
        pattern = getattr(route, "path_regex", None)
        if route.methods and pattern is not None and pattern.match(path):
            methods |= route.methods
    return sorted(methods)


def json_error_bytes(message: str) -> bytes:
    return json.dumps({"error": message}, separators=(",", ":")).encode()
