"""The dashboard's pages. Server-side they only route and check who is signed in; every piece of
data on them is fetched by their scripts from the public REST API, like the CLI does.

On an instance's subdomain (``<sub>.localhost:<port>``) the root page is that instance's
terminal, full screen, for its owner only; see ``handoff`` for how the owner gets a session
cookie on that host.
"""

from __future__ import annotations

from urllib.parse import quote

from fastapi import APIRouter, Request
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.datastructures import Headers
from starlette.responses import RedirectResponse, Response

from gentity.server.auth import (
    Db,
    Principal,
    context,
    read_session_cookie,
    resolve_principal,
    secure_cookie,
    set_session_cookie,
)
from gentity.server.db.ids import utcnow
from gentity.server.services import accounts, instances
from gentity.server.web import handoff
from gentity.server.web.hosts import (
    canonical_url,
    instance_subdomain,
    main_origin,
    preview_origin,
    subdomain_origin,
)
from gentity.server.web.pages import not_found, render
from gentity.server.web.preview import HANDOFF_PATH, safe_path

router = APIRouter(include_in_schema=False)


def _redirect(url: str) -> Response:
    response = RedirectResponse(url, status_code=303)
    response.headers["Cache-Control"] = "no-store"
    return response


def safe_next(value: str | None) -> str:
    """A same-site path to go to after sign-in; anything else (``//evil``, ``https:``) is /."""
    if (
        not value
        or not value.startswith("/")
        or value.startswith("//")
        or "\\" in value
        or any(ord(c) < 0x20 for c in value)
    ):
        return "/dashboard"
    return value


async def _principal(request: Request, db: AsyncSession) -> Principal | None:
    """The signed-in user of a main-host page request: the session cookie only, as browsers
    send it. A session opened on an instance's subdomain is scoped to that instance's
    terminal: it signs nobody in here (else its cookie, replayed to the main host, would open
    every page and hand off to every other instance)."""
    principal = await resolve_principal(db, Headers(), read_session_cookie(request))
    if principal is None or principal.scope_instance_id is not None:
        return None
    return principal


async def _subdomain_principal(request: Request, db: AsyncSession, sub: str) -> Principal | None:
    """The signed-in owner on ``sub``'s host: a session scoped to that very instance (or a
    dashboard session); a session scoped to any other instance counts for nothing."""
    principal = await resolve_principal(db, Headers(), read_session_cookie(request))
    if principal is None or principal.scope_instance_id is None:
        return principal
    row = await instances.find_owned(db, principal.user.id, instance_id=principal.scope_instance_id)
    return principal if row is not None and row.subdomain == sub else None


def _to_login(request: Request) -> Response:
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return _redirect(f"/login?next={quote(here, safe='/')}")


def _off_subdomain(request: Request) -> Response | None:
    """Dashboard pages live on the main host only, under one name: send a visitor on a
    subdomain, or on another name of this server, over there before anything else (a sign-in
    on a second name would be a second, separate session)."""
    settings = context(request).settings
    if (elsewhere := canonical_url(request, settings)) is not None:
        return _redirect(elsewhere)
    if instance_subdomain(request, settings) is None:
        return None
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return _redirect(main_origin(request, settings) + here)


@router.get("/")
async def root(request: Request, db: Db) -> Response:
    sub = instance_subdomain(request, context(request).settings)
    if sub is not None:
        return await _subdomain_terminal(request, db, sub)
    if (away := _off_subdomain(request)) is not None:
        return away
    if await accounts.count_users(db) == 0:
        return _redirect("/setup")
    if await _principal(request, db) is None:
        return _redirect("/login")
    return _redirect("/dashboard")


@router.get("/login")
async def login(request: Request, db: Db) -> Response:
    if (away := _off_subdomain(request)) is not None:
        return away
    if await accounts.count_users(db) == 0:
        return _redirect("/setup")
    next_path = safe_next(request.query_params.get("next"))
    if await _principal(request, db) is not None:
        return _redirect(next_path)
    return render(request, "login.html", title="Sign in", next_path=next_path)


@router.get("/setup")
async def setup(request: Request, db: Db) -> Response:
    if (away := _off_subdomain(request)) is not None:
        return away
    if await accounts.count_users(db) > 0:
        return _redirect("/login")
    return render(request, "setup.html", title="Set up Gentity")


async def _page(request: Request, db: Db, template: str, title: str) -> Response:
    if (away := _off_subdomain(request)) is not None:
        return away
    principal = await _principal(request, db)
    if principal is None:
        return _to_login(request)
    return render(request, template, title=title, user=principal.user)


@router.get("/dashboard")
async def dashboard(request: Request, db: Db) -> Response:
    return await _page(request, db, "dashboard.html", "Instances")


@router.get("/dashboard/new")
async def new_instance(request: Request, db: Db) -> Response:
    return await _page(request, db, "new.html", "New instance")


@router.get("/dashboard/settings/tokens")
async def tokens(request: Request, db: Db) -> Response:
    return await _page(request, db, "tokens.html", "API tokens")


@router.get("/dashboard/instances/{instance_id}")
async def instance(request: Request, db: Db, instance_id: str) -> Response:
    if (away := _off_subdomain(request)) is not None:
        return away
    principal = await _principal(request, db)
    if principal is None:
        return _to_login(request)
    row = await instances.find_owned(db, principal.user.id, instance_id=instance_id)
    if row is None:
        return not_found(request, user=principal.user)
    return render(
        request,
        "instance.html",
        title=row.name,
        user=principal.user,
        terminal=True,
        instance_id=row.id,
        subdomain=row.subdomain,
    )


@router.get("/dashboard/open/{subdomain}")
async def open_on_subdomain(request: Request, db: Db, subdomain: str) -> Response:
    """Hand the signed-in owner over to the instance's subdomain (see ``handoff``)."""
    if (away := _off_subdomain(request)) is not None:
        return away
    principal = await _principal(request, db)
    if principal is None:
        return _to_login(request)
    row = await instances.find_owned(db, principal.user.id, subdomain=subdomain)
    if row is None:
        return not_found(request, user=principal.user)
    ctx = context(request)
    origin = subdomain_origin(request, ctx.settings, row.subdomain)
    if origin is None:
        return render(
            request,
            "message.html",
            status=409,
            title="No host name for subdomains",
            user=principal.user,
            message=(
                "This server is reached by an IP address, which cannot have subdomains. "
                "Set GENTITY_PUBLIC_URL to a host name with a wildcard DNS record, or use "
                "the terminal on the instance page."
            ),
            back=f"/dashboard/instances/{row.id}",
        )
    code = handoff.mint(
        ctx.box,
        user_id=principal.user.id,
        instance_id=row.id,
        subdomain=row.subdomain,
        session_id=principal.credential_id,
    )
    response = _redirect(f"{origin}/?handoff={code}")
    # The code must not travel on in a Referer header.
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


@router.get("/dashboard/preview/{subdomain}/{port}")
async def open_preview(request: Request, db: Db, subdomain: str, port: str) -> Response:
    """Hand the signed-in owner over to a port's preview host (see ``web/preview.py``), then
    on to ``next``, the path there they asked for."""
    if (away := _off_subdomain(request)) is not None:
        return away
    principal = await _principal(request, db)
    if principal is None:
        return _to_login(request)
    number = int(port) if port.isascii() and port.isdigit() and len(port) <= 5 else 0
    row = await instances.find_owned(db, principal.user.id, subdomain=subdomain)
    if row is None or not 1 <= number <= 65535:
        return not_found(request, user=principal.user)
    ctx = context(request)
    origin = preview_origin(request, ctx.settings, row.subdomain, number)
    if origin is None:
        return render(
            request,
            "message.html",
            status=409,
            title="No host name for previews",
            user=principal.user,
            message=(
                "This server is reached by an IP address, which cannot have subdomains. "
                "Set GENTITY_PUBLIC_URL to a host name with a wildcard DNS record."
            ),
            back=f"/dashboard/instances/{row.id}",
        )
    code = handoff.mint(
        ctx.box,
        user_id=principal.user.id,
        instance_id=row.id,
        subdomain=row.subdomain,
        session_id=principal.credential_id,
        port=number,
    )
    target = quote(safe_path(request.query_params.get("next")), safe="/")
    response = _redirect(f"{origin}{HANDOFF_PATH}?code={code}&next={target}")
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


async def _subdomain_terminal(request: Request, db: AsyncSession, sub: str) -> Response:
    """The root of ``<sub>.<host>``: redeem a handoff, or show the terminal to its owner."""
    ctx = context(request)
    code = request.query_params.get("handoff")
    if code is not None:
        opened = await handoff.redeem(
            db,
            ctx.box,
            code,
            subdomain=sub,
            user_agent=request.headers.get("user-agent"),
            address=request.client.host if request.client else "unknown",
        )
        if opened is None:
            return render(
                request,
                "message.html",
                status=403,
                title="This link has expired",
                message=(
                    "Links that open a terminal work once, within a minute. "
                    "Open the terminal again from the dashboard."
                ),
                back=main_origin(request, ctx.settings) + f"/dashboard/open/{sub}",
                back_label="Open it again",
            )
        # Drop the code from the address bar and history.
        response = _redirect("/")
        response.headers["Referrer-Policy"] = "no-referrer"
        ttl = int((opened.expires_at - utcnow()).total_seconds())
        set_session_cookie(
            response,
            opened.secret,
            secure=secure_cookie(request),
            max_age=max(ttl, 1),
        )
        return response
    principal = await _subdomain_principal(request, db, sub)
    if principal is None:
        # No session on this host yet: the main host signs in (if needed) and hands over.
        return _redirect(main_origin(request, ctx.settings) + f"/dashboard/open/{sub}")
    row = await instances.find_owned(db, principal.user.id, subdomain=sub)
    if row is None:
        return not_found(request, dashboard_url=main_origin(request, ctx.settings) + "/dashboard")
    return render(
        request,
        "terminal.html",
        title=row.name,
        user=principal.user,
        terminal=True,
        instance_id=row.id,
        subdomain=row.subdomain,
        dashboard_url=main_origin(request, ctx.settings) + f"/dashboard/instances/{row.id}",
    )


@router.get("/dashboard/{rest:path}")
async def unknown_page(request: Request, db: Db, rest: str) -> Response:
    """A browser following a stale link gets a page, not a JSON error."""
    if (away := _off_subdomain(request)) is not None:
        return away
    principal = await _principal(request, db)
    return not_found(request, user=principal.user if principal else None)
