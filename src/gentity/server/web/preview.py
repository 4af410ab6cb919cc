"""Preview hosts: ``<port>-<subdomain>.<host>`` reaches what an instance serves on ``port``.

Every request on such a host, whatever its path, is the instance's: this ASGI middleware
takes it before any route, decides who gets through, and relays it through the instance's
guest (``web/proxy.py``). The rules:

- A port is the owner's only, unless the owner made it public (``PUT
  /api/instances/<id>/ports/<port>``); then anyone with the URL gets through.
- The owner proves it with an API token (``Authorization: Bearer gn_live_…``) or with the
  preview host's own cookie, which the dashboard hands over like the full-screen terminal's
  (``/dashboard/preview/<subdomain>/<port>`` mints a one-time code that
  :data:`HANDOFF_PATH` on the preview host redeems). That cookie's session is scoped to the
  one instance and ends with the dashboard session it came from.
- A signed-in user who is not the owner gets the same 404 as for no instance at all; a
  browser without a credential is sent to sign in, anything else gets a 401.
- Gentity's credentials never reach the instance: every ``gentity_*`` cookie and a bearer
  token of ours are removed from the request; the instance sees its own cookies and headers.
- The instance cannot set cookies beyond its own host: a ``Set-Cookie`` loses its ``Domain``
  attribute (so it is host-only), and one named like Gentity's is dropped.
- With the preview cookie, an unsafe request or a WebSocket must come from the preview's own
  origin: another instance's page (a sibling host, so "same site") cannot act for the owner.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from html import escape
from typing import Final
from urllib.parse import quote

from sqlalchemy.ext.asyncio import AsyncSession
from starlette.datastructures import Headers
from starlette.requests import HTTPConnection, Request
from starlette.responses import RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from gentity.providers.compute.base import ProviderError, ProviderUnavailable
from gentity.server.auth import Principal
from gentity.server.context import AppContext
from gentity.server.db.ids import utcnow
from gentity.server.errors import answer_for, json_error_bytes
from gentity.server.middleware import SAFE_METHODS
from gentity.server.security.tokens import TOKEN_PREFIX
from gentity.server.services import accounts, previews, tokens
from gentity.server.services.errors import DomainError
from gentity.server.web import handoff, proxy
from gentity.server.web.hosts import instance_subdomain, main_origin, preview_label

#: The one path of a preview host that is Gentity's: it redeems a hand-off code.
HANDOFF_PATH: Final = "/__gentity/handoff"
PREVIEW_COOKIE: Final = "gentity_preview"
# Over https the cookie gets the __Host- prefix: Secure, Path=/, no Domain, never planted by a
# sibling host; and only that name is read then (a plain one may have been planted).
SECURE_PREVIEW_COOKIE: Final = "__Host-gentity_preview"
BUSY: Final = "too many connections to this instance's previews; try again later"


def safe_path(value: str | None) -> str:
    """A path on the same host to go to after the hand-off; anything else is ``/``."""
    if (
        not value
        or not value.startswith("/")
        or value.startswith("//")
        or "\\" in value
        or any(ord(c) < 0x20 or ord(c) == 0x7F for c in value)
    ):
        return "/"
    return value


def is_gentity_cookie(name: str) -> bool:
    """Whether a cookie name is one of Gentity's (``gentity_…``, with or without a prefix)."""
    bare = name.strip().lower()
    for prefix in ("__host-", "__secure-"):
        bare = bare.removeprefix(prefix)
    return bare.startswith("gentity_")


def _ours(authorization: str | None) -> bool:
    scheme, _, value = (authorization or "").partition(" ")
    return scheme.lower() == "bearer" and value.strip().startswith(TOKEN_PREFIX)


def _without_our_cookies(value: bytes) -> bytes:
    kept = []
    for part in value.split(b";"):
        name = part.split(b"=", 1)[0].decode("latin-1")
        if part.strip() and not is_gentity_cookie(name):
            kept.append(part.strip())
    return b"; ".join(kept)


def clean_set_cookie(value: bytes) -> bytes | None:
    """A ``Set-Cookie`` from the instance made host-only, or None when it must be dropped."""
    parts = value.split(b";")
    name = parts[0].split(b"=", 1)[0].decode("latin-1")
    if not parts[0].strip() or is_gentity_cookie(name):
        return None
    kept = [parts[0].strip()]
    for attribute in parts[1:]:
        key = attribute.split(b"=", 1)[0].strip().lower()
        if key != b"domain" and attribute.strip():
            kept.append(attribute.strip())
    return b"; ".join(kept)


def _response_headers(headers: proxy.Headers) -> proxy.Headers:
    drop = proxy.hop_by_hop(headers)
    cleaned = []
    for name, value in headers:
        lower = name.lower()
        if lower in drop:
            continue
        if lower == b"set-cookie":
            cookie = clean_set_cookie(value)
            if cookie is None:
                continue
            value = cookie
        cleaned.append((lower, value))
    return cleaned


def _scheme(scope: Scope) -> str:
    return "https" if scope.get("scheme") in ("https", "wss") else "http"


def _forwarded(scope: Scope, drop_authorization: bool) -> proxy.Headers:
    """The request's headers as the instance gets them: this hop's own, Gentity's cookies and
    token and any forwarding headers the client made up left out; ours set."""
    raw: proxy.Headers = list(scope["headers"])
    drop = proxy.hop_by_hop(raw) | {b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host"}
    # ``Expect: 100-continue`` was this hop's to answer (the ASGI server did).
    drop |= {b"forwarded", b"x-real-ip", b"expect"}
    if drop_authorization:
        drop.add(b"authorization")
    headers = []
    for name, value in raw:
        lower = name.lower()
        if lower in drop:
            continue
        if lower == b"cookie":
            value = _without_our_cookies(value)
            if not value:
                continue
        headers.append((lower, value))
    client = scope.get("client")
    host = Headers(scope=scope).get("host", "")
    headers += [
        (b"x-forwarded-proto", _scheme(scope).encode()),
        (b"x-forwarded-host", host.encode("latin-1")),
        (b"x-forwarded-for", (client[0] if client else "unknown").encode("latin-1")),
    ]
    return headers


def _request_headers(scope: Scope, drop_authorization: bool) -> proxy.Headers:
    headers = _forwarded(scope, drop_authorization)
    raw = Headers(scope=scope)
    if raw.get("content-length") is not None:
        pass  # kept by _forwarded: h11 sends exactly that many bytes
    elif "chunked" in raw.get("transfer-encoding", "").lower():
        headers.append((b"transfer-encoding", b"chunked"))
    headers.append((b"connection", b"close"))
    return headers


class PreviewProxy:
    """Takes every request to a preview host; passes everything else on unchanged."""

    def __init__(self, app: ASGIApp, ctx: AppContext) -> None:
        self.app = app
        self.ctx = ctx
        self._open: dict[str, int] = {}
        """Requests and WebSockets being relayed, per instance."""

    @contextlib.contextmanager
    def _slot(self, instance_id: str) -> Iterator[bool]:
        """One of the instance's ``GENTITY_PREVIEW_MAX_CONNECTIONS``, or False when all are
        taken. Counted before the guest is asked for a connection, so a flood of requests
        reaches neither the guest nor the program."""
        count = self._open.get(instance_id, 0)
        if count >= self.ctx.settings.preview_max_connections:
            yield False
            return
        self._open[instance_id] = count + 1
        try:
            yield True
        finally:
            left = self._open[instance_id] - 1
            if left:
                self._open[instance_id] = left
            else:
                del self._open[instance_id]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        found = preview_label(instance_subdomain(HTTPConnection(scope), self.ctx.settings))
        if found is None:
            await self.app(scope, receive, send)
            return
        port, subdomain = found
        if scope["type"] == "http":
            await self._http(scope, receive, send, subdomain, port)
        else:
            await self._websocket(scope, receive, send, subdomain, port)

    # --- who gets through ------------------------------------------------------------------

    async def _admit(
        self, scope: Scope, subdomain: str, port: int
    ) -> tuple[str, Principal | None] | tuple[int, str]:
        """``(instance id, principal)`` to go on with (principal None on a public port), or
        ``(status, message)`` to refuse with."""
        headers = Headers(scope=scope)
        cookies = HTTPConnection(scope).cookies
        async with self.ctx.db.session() as db:
            target = await previews.find_target(db, subdomain, port)
            if target is None:
                return 404, "Not Found"
            if target.public:
                return target.instance_id, None
            secret = cookies.get(self._cookie_name(scope))
            principal = await self._principal(db, headers, secret, target.instance_id)
        if principal is None:
            if _ours(headers.get("authorization")):
                return 401, "Unauthorized"
            return 401, "Unauthorized: sign in through the dashboard, or send an API token"
        if principal.user.id != target.user_id:
            return 404, "Not Found"  # alike for missing and not yours
        if principal.via == "session" and not self._same_origin(scope, headers):
            return 403, "Cross-origin request refused"
        return target.instance_id, principal

    def _cookie_name(self, scope: Scope) -> str:
        secure = _scheme(scope) == "https" or self.ctx.settings.secure_public_url
        return SECURE_PREVIEW_COOKIE if secure else PREVIEW_COOKIE

    @staticmethod
    async def _principal(
        db: AsyncSession, headers: Headers, secret: str | None, instance_id: str
    ) -> Principal | None:
        authorization = headers.get("authorization")
        if _ours(authorization):
            found = await tokens.authenticate(db, (authorization or "").partition(" ")[2].strip())
            return Principal(found[1], "token", found[0]) if found else None
        opened = await accounts.session_user(db, secret) if secret else None
        if opened is None or opened.scope_instance_id != instance_id:
            return None  # a preview cookie opens its own instance only
        return Principal(opened.account, "session", opened.id, opened.scope_instance_id)

    @staticmethod
    def _same_origin(scope: Scope, headers: Headers) -> bool:
        if scope["type"] == "http" and scope["method"] in SAFE_METHODS:
            return True
        own = f"{_scheme(scope)}://{headers.get('host', '')}".lower()
        origin = headers.get("origin")
        if origin is None:
            return scope["type"] == "http" and headers.get("sec-fetch-site", "same-origin") in (
                "same-origin",
                "none",
            )
        return origin.rstrip("/").lower() == own

    # --- HTTP ------------------------------------------------------------------------------

    async def _http(self, scope: Scope, receive: Receive, send: Send, sub: str, port: int) -> None:
        request = Request(scope, receive)
        if scope["path"] == HANDOFF_PATH:
            await (await self._redeem(request, sub, port))(scope, receive, send)
            return
        admitted = await self._admit(scope, sub, port)
        dashboard = main_origin(request, self.ctx.settings) + "/dashboard"
        if isinstance(admitted[0], int):
            status, message = admitted
            assert isinstance(message, str)
            if status == 401 and _wants_page(request) and "authorization" not in request.headers:
                here = quote(safe_path(_here(scope)), safe="/")
                origin = main_origin(request, self.ctx.settings)
                where = f"{origin}/dashboard/preview/{sub}/{port}?next={here}"
                response: Response = RedirectResponse(where, status_code=303)
                response.headers["Cache-Control"] = "no-store"
            else:
                response = _refusal(request, status, message, dashboard)
            await response(scope, receive, send)
            return
        instance_id, _ = admitted
        with self._slot(instance_id) as admitted_now:
            if not admitted_now:
                await _refusal(request, 503, BUSY, dashboard)(scope, receive, send)
                return
            await self._relay_http(scope, receive, send, request, instance_id, port, dashboard)

    async def _relay_http(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        request: Request,
        instance_id: str,
        port: int,
        dashboard: str,
    ) -> None:
        try:
            upstream = await previews.open_port(self.ctx, instance_id, port)
        except (DomainError, ProviderError, ProviderUnavailable) as exc:
            status, message, _ = answer_for(exc)
            await _refusal(request, status, message, dashboard)(scope, receive, send)
            return
        try:
            await proxy.http(
                scope,
                receive,
                send,
                upstream,
                _request_headers(scope, _ours(request.headers.get("authorization"))),
                _response_headers,
            )
        except proxy.UpstreamError as exc:
            with contextlib.suppress(RuntimeError, OSError):  # unless the answer had begun
                await _error(502, f"port {port}: {exc}")(scope, receive, send)
        finally:
            upstream[1].close()

    async def _redeem(self, request: Request, sub: str, port: int) -> Response:
        ctx = self.ctx
        async with ctx.db.session() as db:
            opened = await handoff.redeem(
                db,
                ctx.box,
                request.query_params.get("code", ""),
                subdomain=sub,
                port=port,
                user_agent=request.headers.get("user-agent"),
                address=request.client.host if request.client else "unknown",
            )
        if opened is None:
            again = main_origin(request, ctx.settings) + f"/dashboard/preview/{sub}/{port}"
            return _page(
                403,
                "This link has expired",
                "Links that open a preview work once, within a minute.",
                again,
                "Open it again",
            )
        response = RedirectResponse(safe_path(request.query_params.get("next")), status_code=303)
        response.headers["Cache-Control"] = "no-store"
        response.headers["Referrer-Policy"] = "no-referrer"
        name = self._cookie_name(request.scope)
        response.set_cookie(
            name,
            opened.secret,
            max_age=max(int((opened.expires_at - utcnow()).total_seconds()), 1),
            path="/",
            httponly=True,
            samesite="lax",
            secure=name == SECURE_PREVIEW_COOKIE,
        )
        return response

    # --- WebSocket -------------------------------------------------------------------------

    async def _websocket(
        self, scope: Scope, receive: Receive, send: Send, sub: str, port: int
    ) -> None:
        if (await receive())["type"] != "websocket.connect":
            return
        admitted = await self._admit(scope, sub, port)
        if isinstance(admitted[0], int):
            status, message = admitted
            assert isinstance(message, str)
            await _deny(scope, send, status, message)
            return
        instance_id, principal = admitted
        with self._slot(instance_id) as admitted_now:
            if not admitted_now:
                await _deny(scope, send, 503, BUSY)
                return
            await self._relay_websocket(scope, receive, send, instance_id, principal, port)

    async def _relay_websocket(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        instance_id: str,
        principal: Principal | None,
        port: int,
    ) -> None:
        headers = Headers(scope=scope)
        try:
            upstream = await previews.open_port(self.ctx, instance_id, port)
        except (DomainError, ProviderError, ProviderUnavailable) as exc:
            status, message, _ = answer_for(exc)
            await _deny(scope, send, status, message)
            return
        try:
            offered = [p.strip() for p in headers.get("sec-websocket-protocol", "").split(",")]
            cleaned = [
                (k, v)
                for k, v in _forwarded(scope, _ours(headers.get("authorization")))
                if not k.startswith(b"sec-websocket-")
            ]
            handshake = await proxy.ws_handshake(
                upstream, _here(scope), cleaned, [p for p in offered if p]
            )
            if not handshake.accepted:
                code = handshake.response.status_code
                await _deny(scope, send, 502, f"port {port} refused the WebSocket (HTTP {code})")
                return
            answer = handshake.response.headers
            accept: dict[str, object] = {"type": "websocket.accept"}
            if chosen := answer.get("Sec-WebSocket-Protocol"):
                accept["subprotocol"] = chosen
            cookies = answer.get_all("Set-Cookie")
            cleaned_cookies = [clean_set_cookie(proxy.header_bytes(v)) for v in cookies]
            accept["headers"] = [(b"set-cookie", c) for c in cleaned_cookies if c is not None]
            await send(accept)
            credential = principal.credential if principal is not None else None
            if credential is None:
                await proxy.ws_relay(receive, send, upstream, handshake, asyncio.Event())
            else:
                with self.ctx.credentials.watch(credential, "preview") as ended:
                    await proxy.ws_relay(receive, send, upstream, handshake, ended)
        except proxy.UpstreamError as exc:
            await _deny(scope, send, 502, f"port {port}: {exc}")
        finally:
            upstream[1].close()


def _here(scope: Scope) -> str:
    path = (scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
    query = scope.get("query_string", b"").decode("latin-1")
    return f"{path}?{query}" if query else path


def _wants_page(request: Request) -> bool:
    """A browser navigating (as opposed to a script or a page's own fetch)."""
    accept = request.headers.get("accept", "")
    return request.method in ("GET", "HEAD") and "text/html" in accept


def _refusal(request: Request, status: int, message: str, dashboard: str) -> Response:
    if not _wants_page(request):
        return _error(status, message)
    titles = {
        404: "Not found",
        409: "The instance is not running",
        502: "Nothing to show",
        503: "Too many connections",
    }
    return _page(status, titles.get(status, "Preview unavailable"), message, dashboard, "Dashboard")


def _page(status: int, title: str, message: str, link: str, label: str) -> Response:
    """A page of our own on a preview host: self-contained, since every other path there,
    ``/static/…`` included, is the instance's."""
    body = (
        "<!doctype html><meta charset=utf-8><meta name=viewport content='width=device-width'>"
        f"<title>{escape(title)} · Gentity</title>"
        "<body style='font-family:system-ui,sans-serif;max-width:34rem;margin:4rem auto;"
        "padding:0 1rem;line-height:1.5'>"
        f"<h1>{escape(title)}</h1><p>{escape(message)}</p>"
        f"<p><a href='{escape(link)}'>{escape(label)}</a></p>"
    )
    return Response(
        body,
        status_code=status,
        media_type="text/html",
        headers={
            "Cache-Control": "no-store",
            "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
            "Referrer-Policy": "no-referrer",
            "X-Content-Type-Options": "nosniff",
        },
    )


def _error(status: int, message: str) -> Response:
    return Response(
        json_error_bytes(message),
        status_code=status,
        media_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


async def _deny(scope: Scope, send: Send, status: int, message: str) -> None:
    headers = [(b"content-type", b"application/json")]
    await proxy.deny(scope, send, status, json_error_bytes(message), headers)
