"""The fake's ASGI application: Machines API under ``/v1``, logs under ``/api/v1``, the edge,
and test controls under ``/__fake__``."""

from __future__ import annotations

import asyncio
import hashlib
import re
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from gentity.testing.fakefly import apps, faults, ids, leases, logs, machines, orgs
from gentity.testing.fakefly.edge import Edge
from gentity.testing.fakefly.errors import FlyError, fly_error_handler, not_found
from gentity.testing.fakefly.faults import Faults
from gentity.testing.fakefly.fleet import Fleet
from gentity.testing.fakefly.ratelimit import RateLimiter
from gentity.testing.fakefly.requests import json_body
from gentity.testing.fakefly.state import Lease, Machine

_AUTHORIZATION = re.compile(r"^(Bearer|FlyV1) +(\S.*)$")
UNAUTHORIZED = {"error": "Authenticate: token validation error"}
CONTROL_PREFIX = "/__fake__"


def edge_route(fleet: Fleet) -> Callable[[str], int | None]:
    """The host port behind ``<app>.fly.dev:443``: a started, uncordoned machine's service
    whose public port 443 has the ``tls`` handler."""

    def route(app_name: str) -> int | None:
        app = fleet.apps.get(app_name)
        if app is None:
            return None
        for machine in app.machines.values():
            if machine.state != "started" or machine.cordoned or machine.sandbox is None:
                continue
            for service in machine.config.get("services") or []:
                for port in service.get("ports") or []:
                    if port.get("port") == 443 and "tls" in (port.get("handlers") or []):
                        forwarded = machine.sandbox.forwarded.get(int(service["internal_port"]))
                        if forwarded is not None:
                            return forwarded
        return None

    return route


def _control_router(fleet: Fleet, injected: Faults) -> APIRouter:
    routes = APIRouter(prefix=CONTROL_PREFIX)

    @routes.post("/faults")
    async def add_fault(request: Request) -> JSONResponse:
        injected.rules.append(faults.parse(await json_body(request)))
        return JSONResponse({"ok": True}, status_code=201)

    @routes.delete("/faults")
    async def clear_faults() -> Response:
        injected.rules.clear()
        return Response(status_code=204)

    @routes.put("/capacity/{region}")
    async def no_capacity(region: str, request: Request) -> Response:
        message = (await json_body(request)).get("error") or (
            f"insufficient resources available to fulfill request: no capacity in {region}"
        )
        fleet.capacity[region] = str(message)
        return Response(status_code=204)

    @routes.delete("/capacity/{region}")
    async def restore_capacity(region: str) -> Response:
        fleet.capacity.pop(region, None)
        return Response(status_code=204)

    @routes.post("/apps/{app}/machines/{machine_id}/lease")
    async def hold_lease(app: str, machine_id: str, request: Request) -> JSONResponse:
        """Hold the machine's lease as someone else (``owner``) for ``ttl`` seconds."""
        body = await json_body(request)
        machine = _find_machine(fleet, app, machine_id)
        owner = str(body.get("owner") or "someone-else@tokens.fly.io")
        ttl = int(body.get("ttl") or 60)
        machine.lease = Lease(
            ids.nonce(), owner, "held by a test", time.time() + ttl, machine.version
        )
        return leases.wrapped(machine.lease.to_json())

    return routes


def _find_machine(fleet: Fleet, app: str, machine_id: str) -> Machine:
    machine = fleet.app(app).machine(machine_id)
    if machine.state == "destroyed":
        raise not_found("machine")
    return machine


def _owner(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()[:12] + "@tokens.fly.io"


def create_app(
    state_dir: Path | None = None,
    *,
    ca_file: Path | None = None,
    edge_host: str = "127.0.0.1",
    edge_port: int = 0,
    images: Mapping[str, list[str]] | None = None,
    default_region: str = "iad",
    rate_limits: bool = True,
) -> FastAPI:
    """The fake Fly API. Its edge listens from start-up to shutdown (see ``app.state.edge.port``);
    shutdown kills every machine. ``images`` maps image references to the command the fake runs
    for them when a machine's config has no ``init`` command."""
    state = Path(tempfile.mkdtemp(prefix="fakefly-")) if state_dir is None else state_dir
    state.mkdir(parents=True, exist_ok=True)
    fleet = Fleet(state, images or {}, default_region)
    edge = Edge(ca_file or state / "ca.pem", edge_route(fleet))
    injected = Faults()
    limiter = RateLimiter()

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await edge.start(edge_host, edge_port)
        try:
            yield
        finally:
            await edge.close()
            await fleet.shutdown()
            if state_dir is None:  # a directory of its own making
                shutil.rmtree(state, ignore_errors=True)

    app = FastAPI(lifespan=lifespan, openapi_url=None, docs_url=None, redoc_url=None)
    app.state.fleet = fleet
    app.state.edge = edge
    app.add_exception_handler(FlyError, fly_error_handler)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = "not found" if exc.status_code == 404 else str(exc.detail)
        return JSONResponse({"error": message}, status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def internal_error(_request: Request, _exc: Exception) -> JSONResponse:
        # Fly answers JSON even when it fails; the traceback is in the fake's own log.
        return JSONResponse({"error": "internal error"}, status_code=500)

    @app.middleware("http")
    async def gate(request: Request, call_next: Callable[[Request], Awaitable[Any]]) -> Any:
        path = request.url.path
        if path.startswith(CONTROL_PREFIX):
            return await call_next(request)
        match = _AUTHORIZATION.match(request.headers.get("authorization", ""))
        if match is None:
            return JSONResponse(UNAUTHORIZED, status_code=401)
        request.state.owner = _owner(match.group(2))
        fault = injected.take(request.method, path)
        if fault is not None:
            if fault.hang_seconds:
                await asyncio.sleep(fault.hang_seconds)
            response = fault.response()
            if response is not None:
                return response
        wait = limiter.retry_after(request.method, path) if rate_limits else 0
        if wait:
            return JSONResponse(
                {"error": "rate limit exceeded"},
                status_code=429,
                headers={"Retry-After": str(wait)},
            )
        response = await call_next(request)
        response.headers["fly-request-id"] = ids.ulid()
        return response

    def find(app_name: str, machine_id: str) -> Machine:
        return _find_machine(fleet, app_name, machine_id)

    app.include_router(apps.router(fleet))
    app.include_router(leases.router(find))
    app.include_router(machines.router(fleet))
    app.include_router(orgs.router(fleet))
    app.include_router(logs.router(fleet.logs, lambda name: name in fleet.apps))
    app.include_router(_control_router(fleet, injected))
    return app
