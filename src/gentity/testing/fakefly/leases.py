"""Machine leases: the lock clients hold around a mutation, and the check guarded calls make."""

from __future__ import annotations

import time
from collections.abc import Callable

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from gentity.testing.fakefly import ids
from gentity.testing.fakefly.errors import FlyError, bad_request, not_found
from gentity.testing.fakefly.requests import NONCE_HEADER, json_body, token_owner
from gentity.testing.fakefly.state import Json, Lease, Machine

DEFAULT_TTL = 30

MachineFinder = Callable[[str, str], Machine]
"""Finds a live machine by app and id, or raises the 404."""


def guard(machine: Machine, request: Request) -> None:
    """Refuse a guarded mutation (update, start, stop, restart, suspend, cordon, destroy,
    signal) while someone else holds the machine's lease."""
    lease = machine.active_lease()
    if lease is not None:
        error = lease.held_by_other(machine.id, request.headers.get(NONCE_HEADER))
        if error is not None:
            raise error


def wrapped(data: Json) -> JSONResponse:
    """Leases come wrapped in ``{status, data}``, unlike the Swagger schema says."""
    return JSONResponse({"status": "success", "data": data})


def take_lease(
    machine: Machine, owner: str, ttl: int, description: str, nonce: str | None
) -> Lease:
    """Acquire the lease, or refresh it for the holder of ``nonce``."""
    lease = machine.active_lease()
    if lease is not None:
        error = lease.held_by_other(machine.id, nonce)
        if error is not None:
            raise error
        lease.expires_at = time.time() + ttl
        return lease
    machine.lease = Lease(ids.nonce(), owner, description, time.time() + ttl, machine.version)
    return machine.lease


def _ttl(value: object) -> int:
    try:
        ttl = int(str(value)) if value not in (None, "") else DEFAULT_TTL
    except ValueError:
        raise bad_request("invalid ttl") from None
    if ttl <= 0:
        raise bad_request("ttl must be positive")
    return ttl


def router(find: MachineFinder) -> APIRouter:
    routes = APIRouter(prefix="/v1/apps/{app}/machines/{machine_id}/lease")

    @routes.get("")
    async def show(app: str, machine_id: str) -> JSONResponse:
        lease = find(app, machine_id).active_lease()
        if lease is None:
            raise not_found("lease")
        return wrapped(lease.to_json())

    @routes.post("")
    async def acquire(app: str, machine_id: str, request: Request) -> JSONResponse:
        machine = find(app, machine_id)
        body = await json_body(request)
        ttl = _ttl(body.get("ttl", request.query_params.get("ttl")))
        lease = take_lease(
            machine,
            token_owner(request),
            ttl,
            str(body.get("description") or ""),
            request.headers.get(NONCE_HEADER),
        )
        return wrapped(lease.to_json())

    @routes.delete("")
    async def release(app: str, machine_id: str, request: Request) -> JSONResponse:
        machine = find(app, machine_id)
        nonce = request.headers.get(NONCE_HEADER)
        if not nonce:
            raise bad_request(f"{NONCE_HEADER} header is required")
        lease = machine.active_lease()
        if lease is None:
            raise not_found("lease")
        if lease.nonce != nonce:
            raise FlyError(409, "aborted: lease nonce does not match")
        machine.lease = None
        return wrapped({"ok": True})

    return routes
