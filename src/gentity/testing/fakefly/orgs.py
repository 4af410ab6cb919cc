"""``GET /v1/orgs/{org}/machines``: every machine of an organization's apps, page by page.

As Fly documents it: sorted by ``updated_at``, oldest first; ``limit`` (at most 2,000, the
default) is advisory; ``next_cursor`` (opaque) continues after the last machine of the page and
is absent on the last page; ``summary`` leaves the config out; destroyed machines only with
``include_deleted``; ``state`` and ``region`` filter, ``updated_after`` starts later.
"""

from __future__ import annotations

import base64
import binascii
import heapq

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from gentity.testing.fakefly.errors import bad_request
from gentity.testing.fakefly.fleet import Fleet
from gentity.testing.fakefly.requests import flag
from gentity.testing.fakefly.state import Json, Machine

MAX_LIMIT = 2000
FILTER_STATES = {"created", "started", "stopped", "suspended", "failed"}


def _cursor(machine: Machine) -> str:
    return base64.urlsafe_b64encode(f"{machine.updated_at}/{machine.id}".encode()).decode()


def _after(cursor: str) -> tuple[str, str]:
    try:
        updated_at, _, machine_id = base64.urlsafe_b64decode(cursor).decode().partition("/")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise bad_request("invalid cursor") from None
    return updated_at, machine_id


def _limit(value: str | None) -> int:
    if value in (None, ""):
        return MAX_LIMIT
    try:
        limit = int(value)
    except ValueError:
        raise bad_request(f"invalid limit {value!r}") from None
    return max(1, min(limit, MAX_LIMIT))


def _overview(machine: Machine, app_name: str, *, summary: bool) -> Json:
    entry: Json = {
        "id": machine.id,
        "name": machine.name,
        "state": machine.state,
        "region": machine.region,
        "instance_id": machine.version,
        "version": machine.version,
        "private_ip": machine.private_ip,
        "app_name": app_name,
        "created_at": machine.created_at,
        "updated_at": machine.updated_at,
    }
    if not summary:
        config = machine.config
        entry["config"] = {"image": config.get("image"), "metadata": config.get("metadata")}
    return entry


def router(fleet: Fleet) -> APIRouter:
    routes = APIRouter(prefix="/v1/orgs/{org}")

    @routes.get("/machines")
    async def list_org_machines(org: str, request: Request) -> JSONResponse:
        query = request.query_params
        states = {s for s in query.get("state", "").split(",") if s}
        if states - FILTER_STATES:
            raise bad_request(f"invalid state filter {query.get('state')!r}")
        limit = _limit(query.get("limit"))
        start = ("", "")
        if query.get("cursor"):
            start = _after(query["cursor"])
        elif query.get("updated_after"):
            start = (query["updated_after"], "\uffff")
        deleted, region = flag(request, "include_deleted"), query.get("region")
        # The page and one more (to know whether another page follows), without sorting all.
        found = heapq.nsmallest(
            limit + 1,
            (
                (machine.updated_at, machine.id, machine, app.name)
                for app in fleet.apps.values()
                if app.org_slug == org
                for machine in app.machines.values()
                if (machine.state != "destroyed" or deleted)
                and (not states or machine.state in states)
                and region in (None, "", machine.region)
                and (machine.updated_at, machine.id) > start
            ),
            key=lambda entry: (entry[0], entry[1]),
        )
        page = [(machine, app) for _, _, machine, app in found[:limit]]
        body: Json = {
            "machines": [_overview(m, app, summary=flag(request, "summary")) for m, app in page]
        }
        if page:
            last = page[-1][0]
            body.update(last_machine_id=last.id, last_updated_at=last.updated_at)
        if len(found) > limit:
            body["next_cursor"] = _cursor(page[-1][0])
        return JSONResponse(body)

    return routes
