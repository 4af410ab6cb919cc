"""Routes for apps, their IP assignments and volumes, and the token check."""

from __future__ import annotations

import re
import secrets
import shutil

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from gentity.testing.fakefly import ids
from gentity.testing.fakefly.errors import FlyError, bad_request, not_found
from gentity.testing.fakefly.fleet import Fleet
from gentity.testing.fakefly.requests import json_body, token_owner
from gentity.testing.fakefly.state import App, Volume

_APP_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")
IP_TYPES = {"v4", "v6", "shared_v4", "private_v6", "egress_v4", "egress_v6", "egress_pair"}


def _ip(kind: str) -> str:
    if kind.endswith("v4"):
        return f"66.241.{secrets.randbelow(256)}.{secrets.randbelow(254) + 1}"
    prefix = "fdaa:0:" if kind == "private_v6" else "2a09:8280:1::"
    return f"{prefix}{secrets.token_hex(2)}:{secrets.token_hex(2)}"


def router(fleet: Fleet) -> APIRouter:
    routes = APIRouter(prefix="/v1")

    @routes.get("/tokens/current")
    async def current_token(request: Request) -> JSONResponse:
        token = {
            "org_slug": "personal",
            "organization": "personal",
            "apps": [],
            "token_id": token_owner(request).split("@", 1)[0],
            "user": token_owner(request),
            "source_machine_id": "",
            "restricted_to_machine": "",
        }
        return JSONResponse({"tokens": [token]})

    @routes.post("/apps")
    async def create_app(request: Request) -> JSONResponse:
        body = await json_body(request)
        name = str(body.get("name") or body.get("app_name") or "")
        if not _APP_NAME.match(name):
            raise bad_request(f"invalid app name {name!r}")
        if name in fleet.apps:
            raise FlyError(422, "Name has already been taken", "name_taken")
        app = App(
            id=ids.app_id(),
            name=name,
            org_slug=str(body.get("org_slug") or "personal"),
            network=str(body.get("network") or "default"),
            numeric_id=secrets.randbelow(1 << 31),
        )
        fleet.apps[name] = app
        return JSONResponse(app.to_json(), status_code=201)

    @routes.get("/apps")
    async def list_apps(request: Request) -> JSONResponse:
        org = request.query_params.get("org_slug")
        apps = [a.to_json() for a in fleet.apps.values() if org in (None, "", a.org_slug)]
        return JSONResponse({"total_apps": len(apps), "apps": apps})

    @routes.get("/apps/{app}")
    async def get_app(app: str) -> JSONResponse:
        return JSONResponse(fleet.app(app).to_json())

    @routes.delete("/apps/{app}")
    async def delete_app(app: str) -> Response:
        await fleet.delete_app(fleet.app(app))
        return Response(status_code=202)

    @routes.get("/apps/{app}/ip_assignments")
    async def list_ips(app: str) -> JSONResponse:
        return JSONResponse({"ips": fleet.app(app).ips})

    @routes.post("/apps/{app}/ip_assignments")
    async def assign_ip(app: str, request: Request) -> JSONResponse:
        target = fleet.app(app)
        body = await json_body(request)
        kind = str(body.get("type", ""))
        if kind not in IP_TYPES:
            raise bad_request(f"invalid ip type {kind!r}")
        network = body.get("network")
        if network and network != target.network:
            raise bad_request("network not found")
        assignment = {
            "ip": _ip(kind),
            "region": str(body.get("region") or "global"),
            "service_name": str(body.get("service_name") or ""),
            "shared": kind == "shared_v4",
            "created_at": ids.iso(),
            "network": ({"name": target.network, "org_slug": target.org_slug} if network else None),
        }
        target.ips.append(assignment)
        return JSONResponse(assignment)

    @routes.delete("/apps/{app}/ip_assignments/{ip}")
    async def release_ip(app: str, ip: str) -> Response:
        target = fleet.app(app)
        kept = [a for a in target.ips if a["ip"] != ip]
        if len(kept) == len(target.ips):
            raise not_found("ip")
        target.ips = kept
        return Response(status_code=204)

    @routes.get("/apps/{app}/volumes")
    async def list_volumes(app: str) -> JSONResponse:
        volumes = fleet.app(app).volumes.values()
        return JSONResponse([v.to_json() for v in volumes if v.state != "destroyed"])

    @routes.post("/apps/{app}/volumes")
    async def create_volume(app: str, request: Request) -> JSONResponse:
        target = fleet.app(app)
        body = await json_body(request)
        name = str(body.get("name") or "")
        if not re.fullmatch(r"[a-z0-9_]{1,30}", name):
            raise bad_request("volume name must be lowercase letters, digits and underscores")
        region = str(body.get("region") or fleet.default_region)
        fleet.check_capacity(region)
        size = int(body.get("size_gb") or 3)
        volume_id = ids.volume_id()
        path = fleet.state_dir / "volumes" / volume_id
        path.mkdir(parents=True)
        volume = Volume(
            id=volume_id,
            app=app,
            name=name,
            region=region,
            size_gb=size,
            encrypted=bool(body.get("encrypted", True)),
            path=path,
        )
        target.volumes[volume_id] = volume
        return JSONResponse(volume.to_json())

    @routes.get("/apps/{app}/volumes/{volume_id}")
    async def get_volume(app: str, volume_id: str) -> JSONResponse:
        return JSONResponse(fleet.app(app).volume(volume_id).to_json())

    @routes.put("/apps/{app}/volumes/{volume_id}/extend")
    async def extend_volume(app: str, volume_id: str, request: Request) -> JSONResponse:
        volume = fleet.app(app).volume(volume_id)
        size = int((await json_body(request)).get("size_gb") or 0)
        if size <= volume.size_gb:
            raise bad_request("size_gb must be greater than the current size")
        volume.size_gb = size
        return JSONResponse({"volume": volume.to_json(), "needs_restart": False})

    @routes.delete("/apps/{app}/volumes/{volume_id}")
    async def delete_volume(app: str, volume_id: str) -> JSONResponse:
        volume = fleet.app(app).volume(volume_id)
        if volume.attached_machine_id is not None:
            raise FlyError(
                409,
                "failed_precondition: volume is currently bound to machine: "
                f"{volume.attached_machine_id}",
            )
        volume.state = "destroyed"
        shutil.rmtree(volume.path, ignore_errors=True)
        return JSONResponse(volume.to_json())

    return routes
