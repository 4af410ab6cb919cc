"""A fake of Cloudflare's v4 DNS records API, for tests and local runs.

    python -m gentity.testing.fakecloudflare --port 8787 [--zone example.com] [--token T]

It follows the real contract (Cloudflare's API reference and error bodies quoted from the
wild) wherever a client can tell the difference: every answer is the
``{"success", "errors", "messages", "result"}`` envelope; names come back fully qualified and in
lower case; the duplicate (81053, 81054, 81057), not-found (81044), validation (1004 with an
``error_chain``) and authentication (9106, 6003/6111, 10000) errors carry the real codes and
statuses, as do bad addresses (9005, 9006) and, inside a validation error's chain, a bad TTL
(9021) or proxying (9004); the fake's other validation codes are plausible stand-ins.

Records can be created, listed (filters ``type``, ``name``, ``content``, ``comment`` and
``proxied``, with ``.exact``/``.contains``/``.startswith``/``.endswith`` and ``match``;
``page``/``per_page``), read, patched, overwritten and deleted. Any well-formed ``Bearer``
token is accepted unless ``--token`` names the only one. Zone ids are derived from zone
names, so they stay the same from one run to the next.

What no real API has, under ``/__fake__`` (no authentication):

- ``POST /__fake__/faults`` ``{"method"?, "path"?, "status"?, "body"?, "text"?, "headers"?,
  "times"?, "hang"?}``: the next ``times`` (default 1) requests whose method and path (below
  ``/client/v4``, a prefix) match wait ``hang`` seconds, if given, then get ``status`` with the
  JSON ``body`` or the raw ``text``; without ``status`` they are then served normally.
- ``DELETE /__fake__/faults``: forget every fault.
- ``GET /__fake__/requests``: ``[{"method", "path", "params"}]`` of every API request so far.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import ipaddress
import re
import secrets
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

API = "/client/v4"
_BEARER = re.compile(r"Bearer [A-Za-z0-9_-]+")
_PROXIABLE = frozenset({"A", "AAAA", "CNAME"})
_TYPES = frozenset({"A", "AAAA", "CNAME", "TXT"})
_MIN_PER_PAGE, _MAX_PER_PAGE = 5, 5_000_000

Handler = Callable[[Request], Awaitable[Response]]


class ApiError(Exception):
    """An error answer: HTTP status and Cloudflare's ``errors`` list."""

    def __init__(self, status: int, *errors: dict[str, Any]) -> None:
        self.status = status
        self.errors = list(errors)


def _error(code: int, message: str, chain: Iterable[tuple[int, str]] = ()) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    links = [{"code": c, "message": m} for c, m in chain]
    if links:
        error["error_chain"] = links
    return error


def _invalid(code: int, message: str) -> ApiError:
    """A record that fails validation: 1004 with the reason in its chain, as Cloudflare does."""
    return ApiError(400, _error(1004, "DNS Validation Error", [(code, message)]))


def _envelope(
    result: Any, info: dict[str, int] | None = None, messages: Iterable[dict[str, Any]] = ()
) -> JSONResponse:
    body: dict[str, Any] = {
        "success": True,
        "errors": [],
        "messages": list(messages),
        "result": result,
    }
    if info is not None:
        body["result_info"] = info
    return JSONResponse(body)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class Fault:
    """What to do instead of (or before) serving the next matching requests."""

    method: str | None = None
    path: str | None = None
    status: int | None = None
    body: Any = None
    text: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    times: int = 1
    hang: float | None = None

    def matches(self, method: str, path: str) -> bool:
        return (self.method is None or self.method.upper() == method) and (
            self.path is None or path.startswith(self.path)
        )


class FakeCloudflare:
    """The fake's state: zones, their records, pending faults and the request log."""

    def __init__(self, zones: Iterable[str], token: str | None) -> None:
        self.zones = {_zone_id(name): name.lower() for name in zones}
        self.records: dict[str, dict[str, dict[str, Any]]] = {z: {} for z in self.zones}
        self.faults: list[Fault] = []
        self.requests: list[dict[str, Any]] = []
        self.token = token

    def api(self, handler: Handler) -> Handler:
        """Wrap an API endpoint: log it, apply faults, check the credentials, envelope errors."""

        async def endpoint(request: Request) -> Response:
            path = request.url.path.removeprefix(API)
            self.requests.append(
                {"method": request.method, "path": path, "params": dict(request.query_params)}
            )
            fault = self._take_fault(request.method, path)
            if fault is not None:
                if fault.hang:
                    await asyncio.sleep(fault.hang)
                if fault.status is not None:
                    if fault.text is not None:
                        return Response(fault.text, fault.status, headers=fault.headers)
                    return JSONResponse(fault.body, fault.status, headers=fault.headers)
            try:
                self._authenticate(request, path)
                return await handler(request)
            except ApiError as exc:
                body = {"success": False, "errors": exc.errors, "messages": [], "result": None}
                return JSONResponse(body, exc.status)

        return endpoint

    def _take_fault(self, method: str, path: str) -> Fault | None:
        for fault in self.faults:
            if fault.matches(method, path):
                fault.times -= 1
                if fault.times <= 0:
                    self.faults.remove(fault)
                return fault
        return None

    def _authenticate(self, request: Request, path: str) -> None:
        header = request.headers.get("authorization")
        if header is None:
            if "x-auth-key" in request.headers or "x-auth-email" in request.headers:
                # The fake knows no global API keys.
                raise ApiError(
                    400,
                    _error(
                        6003,
                        "Invalid request headers",
                        [(6103, "Invalid format for X-Auth-Key header")],
                    ),
                )
            raise ApiError(
                400, _error(9106, "Missing X-Auth-Key, X-Auth-Email or Authorization headers")
            )
        if not _BEARER.fullmatch(header):
            raise ApiError(
                400,
                _error(
                    6003,
                    "Invalid request headers",
                    [(6111, "Invalid format for Authorization header")],
                ),
            )
        if self.token is not None and not secrets.compare_digest(header[7:], self.token):
            if path == "/user/tokens/verify":
                raise ApiError(401, _error(1000, "Invalid API Token"))
            raise ApiError(403, _error(10000, "Authentication error"))

    # -- zones

    def zone(self, request: Request) -> tuple[str, dict[str, dict[str, Any]]]:
        zone_id = request.path_params["zone_id"]
        if zone_id not in self.zones:
            raise ApiError(
                400,
                _error(
                    7003,
                    f"Could not route to {request.url.path.removeprefix(API)}, "
                    "perhaps your object identifier is invalid?",
                ),
                _error(7000, "No route for that URI"),
            )
        return zone_id, self.records[zone_id]

    def zone_object(self, zone_id: str) -> dict[str, Any]:
        return {
            "id": zone_id,
            "name": self.zones[zone_id],
            "status": "active",
            "paused": False,
            "type": "full",
            "name_servers": ["ada.ns.cloudflare.com", "bob.ns.cloudflare.com"],
        }

    # -- records

    def validate(
        self, zone_id: str, records: dict[str, dict[str, Any]], new: dict[str, Any]
    ) -> None:
        """Raise the error Cloudflare gives for ``new`` in this zone (its id, when it has one,
        excluded from the duplicate checks)."""
        kind = new.get("type")
        if kind not in _TYPES:
            raise _invalid(9000, f"the fake supports {', '.join(sorted(_TYPES))} records only")
        if not isinstance(new.get("name"), str) or not new["name"]:
            raise _invalid(9000, "DNS name is invalid.")
        content = new.get("content")
        if not isinstance(content, str) or not content:
            raise _invalid(9007, f"Content for {kind} record is invalid.")
        if kind in ("A", "AAAA"):
            version: int
            try:
                version = ipaddress.ip_address(content).version
            except ValueError:
                version = 0
            if version != (4 if kind == "A" else 6):
                number = "4" if kind == "A" else "6"
                # Observed as a top-level error, not in a 1004 chain.
                raise ApiError(
                    400,
                    _error(
                        9005 if kind == "A" else 9006,
                        f"Content for {kind} record must be a valid IPv{number} address.",
                    ),
                )
        ttl = new.get("ttl")
        if (
            not isinstance(ttl, int)
            or isinstance(ttl, bool)
            or not (ttl == 1 or 60 <= ttl <= 86400)
        ):
            raise _invalid(9021, "TTL must be between 60 and 86400 seconds, or 1 for Automatic.")
        if not isinstance(new.get("proxied"), bool):
            raise _invalid(9003, "Invalid 'proxied' value, must be a boolean")
        if new["proxied"] and kind not in _PROXIABLE:
            raise _invalid(9004, "This record type cannot be proxied.")
        others = [
            r for r in records.values() if r["name"] == new["name"] and r["id"] != new.get("id")
        ]
        if any(r["type"] == kind and r["content"].lower() == content.lower() for r in others):
            raise ApiError(400, _error(81057, "Record already exists."))
        if kind == "CNAME" and others:
            raise ApiError(
                400, _error(81053, "An A, AAAA, or CNAME record with that host already exists.")
            )
        if any(r["type"] == "CNAME" for r in others):
            raise ApiError(400, _error(81054, "A CNAME record with that host already exists."))

    def fqdn(self, zone_id: str, name: Any) -> Any:
        """``name`` as Cloudflare stores it: fully qualified, lower case, no trailing dot."""
        if not isinstance(name, str):
            return name
        zone = self.zones[zone_id]
        name = name.strip().rstrip(".").lower()
        if name == "@":
            return zone
        if not name:
            return name  # refused by validate()
        return name if name == zone or name.endswith("." + zone) else f"{name}.{zone}"


def _zone_id(name: str) -> str:
    return hashlib.sha256(name.lower().encode()).hexdigest()[:32]


async def _json_object(request: Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise ApiError(400, _error(9207, "Request body is invalid."))
    return body


def _matches(record: dict[str, Any], key: str, value: str) -> bool:
    """One list filter: ``field`` or ``field.exact|contains|startswith|endswith|present|absent``."""
    name, _, op = key.partition(".")
    actual = record.get(name)
    if op == "present":
        return actual is not None and actual != ""
    if op == "absent":
        return actual is None or actual == ""
    if name == "proxied":
        return str(actual).lower() == value.lower()
    text, value = str(actual or "").lower(), value.lower()
    if op in ("", "exact"):
        return text == value
    if op == "contains":
        return value in text
    if op == "startswith":
        return text.startswith(value)
    return op == "endswith" and text.endswith(value)


_FILTER_FIELDS = ("type", "name", "content", "comment", "proxied")


def _page(request: Request, items: list[dict[str, Any]]) -> JSONResponse:
    try:
        page = max(1, int(request.query_params.get("page", "1")))
        per_page = int(request.query_params.get("per_page", "100"))
    except ValueError:
        raise ApiError(
            400, _error(1004, "DNS Validation Error", [(9009, "Invalid page")])
        ) from None
    per_page = min(max(per_page, _MIN_PER_PAGE), _MAX_PER_PAGE)
    chunk = items[(page - 1) * per_page : page * per_page]
    info = {
        "page": page,
        "per_page": per_page,
        "count": len(chunk),
        "total_count": len(items),
        "total_pages": max(1, -(-len(items) // per_page)),
    }
    return _envelope(chunk, info=info)


def create_app(zones: Iterable[str] = ("example.com",), token: str | None = None) -> Starlette:
    """The fake as an ASGI app; ``app.state.fake`` is its :class:`FakeCloudflare`."""
    fake = FakeCloudflare(zones, token)

    async def verify_token(request: Request) -> Response:
        token_id = hashlib.sha256(request.headers["authorization"].encode()).hexdigest()[:32]
        message = {"code": 10000, "message": "This API Token is valid and active", "type": None}
        return _envelope({"id": token_id, "status": "active"}, messages=[message])

    async def list_zones(request: Request) -> Response:
        name = request.query_params.get("name")
        found = [fake.zone_object(z) for z, n in fake.zones.items() if name in (None, n)]
        return _page(request, found)

    async def get_zone(request: Request) -> Response:
        zone_id, _ = fake.zone(request)
        return _envelope(fake.zone_object(zone_id))

    async def list_records(request: Request) -> Response:
        zone_id, records = fake.zone(request)
        filters = [
            (k, fake.fqdn(zone_id, v) if k in ("name", "name.exact") else v)
            for k, v in request.query_params.items()
            if k.partition(".")[0] in _FILTER_FIELDS
        ]
        test = any if request.query_params.get("match") == "any" else all
        found = [r for r in records.values() if test(_matches(r, k, v) for k, v in filters)]
        found.sort(key=lambda r: (r["type"], r["name"], r["created_on"]))
        return _page(request, found)

    async def create_record(request: Request) -> Response:
        zone_id, records = fake.zone(request)
        body = await _json_object(request)
        new = {"ttl": 1, "proxied": False, **body, "name": fake.fqdn(zone_id, body.get("name"))}
        fake.validate(zone_id, records, new)
        record = _stored(new, {"id": secrets.token_hex(16)})
        records[record["id"]] = record
        return _envelope(record)

    def existing(request: Request) -> tuple[str, dict[str, dict[str, Any]], dict[str, Any]]:
        zone_id, records = fake.zone(request)
        record = records.get(request.path_params["record_id"])
        if record is None:
            raise ApiError(404, _error(81044, "Record does not exist."))
        return zone_id, records, record

    async def get_record(request: Request) -> Response:
        return _envelope(existing(request)[2])

    async def update_record(request: Request) -> Response:
        """PATCH changes the fields given; PUT replaces the record, defaults and all."""
        zone_id, records, record = existing(request)
        body = await _json_object(request)
        base = record if request.method == "PATCH" else {"ttl": 1, "proxied": False}
        new = {**base, **body, "id": record["id"]}
        new["name"] = fake.fqdn(zone_id, new.get("name"))
        fake.validate(zone_id, records, new)
        records[record["id"]] = _stored(new, record)
        return _envelope(records[record["id"]])

    async def delete_record(request: Request) -> Response:
        _, records, record = existing(request)
        del records[record["id"]]
        return _envelope({"id": record["id"]})

    async def add_fault(request: Request) -> Response:
        try:
            fault = Fault(**await request.json())
        except (ValueError, TypeError) as exc:
            return JSONResponse({"error": f"not a fault: {exc}"}, 400)
        fake.faults.append(fault)
        return JSONResponse({"faults": len(fake.faults)})

    async def clear_faults(request: Request) -> Response:
        fake.faults.clear()
        return JSONResponse({"faults": 0})

    async def request_log(request: Request) -> Response:
        return JSONResponse(fake.requests)

    async def no_route(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        code, message = (
            (7001, "Method not allowed") if status == 405 else (7000, "No route for that URI")
        )
        body = {"success": False, "errors": [_error(code, message)], "messages": [], "result": None}
        return JSONResponse(body, status)

    records = API + "/zones/{zone_id}/dns_records"
    routes = [
        Route(API + "/user/tokens/verify", fake.api(verify_token)),
        Route(API + "/zones", fake.api(list_zones)),
        Route(API + "/zones/{zone_id}", fake.api(get_zone)),
        Route(records, fake.api(list_records)),
        Route(records, fake.api(create_record), methods=["POST"]),
        Route(records + "/{record_id}", fake.api(get_record)),
        Route(records + "/{record_id}", fake.api(update_record), methods=["PATCH", "PUT"]),
        Route(records + "/{record_id}", fake.api(delete_record), methods=["DELETE"]),
        Route("/__fake__/faults", add_fault, methods=["POST"]),
        Route("/__fake__/faults", clear_faults, methods=["DELETE"]),
        Route("/__fake__/requests", request_log),
    ]
    app = Starlette(routes=routes, exception_handlers={HTTPException: no_route})
    app.state.fake = fake
    return app


def _stored(new: dict[str, Any], old: dict[str, Any]) -> dict[str, Any]:
    """The record object Cloudflare returns, from validated fields and the stored record."""
    now = _now()
    comment = new.get("comment") or None
    record = {
        "id": old["id"],
        "name": new["name"],
        "type": new["type"],
        "content": new["content"],
        "proxiable": new["type"] in _PROXIABLE,
        "proxied": new["proxied"],
        # Proxied records always have the automatic TTL.
        "ttl": 1 if new["proxied"] else new["ttl"],
        "settings": {},
        "meta": {},
        "comment": comment,
        "tags": list(new.get("tags") or []),
        "created_on": old.get("created_on", now),
        "modified_on": now,
    }
    if comment is not None:
        unchanged = old.get("comment") == comment
        record["comment_modified_on"] = old.get("comment_modified_on") if unchanged else now
    return record


async def _serve(app: Starlette, host: str, port: int) -> None:
    server = uvicorn.Server(
        uvicorn.Config(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=1)
    )
    serving = asyncio.create_task(server.serve())
    while not server.started:
        if serving.done():
            await serving  # raises why it could not start
            return
        await asyncio.sleep(0.02)
    bound_host, bound_port = server.servers[0].sockets[0].getsockname()[:2]
    # The first line of output tells a caller that asked for port 0 where to go.
    print(f"fake Cloudflare API on http://{bound_host}:{bound_port}{API}", flush=True)
    await serving


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A fake of Cloudflare's v4 DNS records API.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True, help="0 picks a free port")
    parser.add_argument(
        "--zone", action="append", help="a zone to serve (repeatable; default example.com)"
    )
    parser.add_argument("--token", help="the only API token accepted (default: any)")
    args = parser.parse_args(argv)
    asyncio.run(_serve(create_app(args.zone or ["example.com"], args.token), args.host, args.port))


if __name__ == "__main__":
    main()
