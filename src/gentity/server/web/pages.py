"""Rendering page shells: templates, static asset versions and the security headers.

Pages are shells: the data in them is fetched by the page's script from the public REST API.
"""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from gentity.server.security.passwords import MIN_PASSWORD_LENGTH
from gentity.server.web.hosts import websocket_sources

HERE = Path(__file__).parent
STATIC_DIR = HERE / "static"
templates = Jinja2Templates(directory=HERE / "templates")


@cache
def asset_version() -> str:
    """A digest of every static file, appended to asset URLs so a new release is never mixed
    with cached scripts of the old one."""
    digest = hashlib.sha256()
    for path in sorted(STATIC_DIR.rglob("*")):
        if path.is_file():
            digest.update(path.relative_to(STATIC_DIR).as_posix().encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def static_app() -> StaticFiles:
    return StaticFiles(directory=STATIC_DIR)


def content_security_policy(request: Request, *, inline_styles: bool) -> str:
    """Only this server's own scripts, styles, images and connections; never framed.

    ``inline_styles`` is for pages with a terminal: xterm.js sizes its rows and cells with
    ``<style>`` elements and style attributes it creates at run time. Scripts stay 'self' only.
    """
    style = "'self' 'unsafe-inline'" if inline_styles else "'self'"
    connect = " ".join(part for part in ("'self'", websocket_sources(request)) if part)
    return "; ".join(
        (
            "default-src 'self'",
            "script-src 'self'",
            f"style-src {style}",
            "img-src 'self' data:",
            "font-src 'self'",
            f"connect-src {connect}",
            "object-src 'none'",
            "base-uri 'none'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        )
    )


def secure(response: Response, request: Request, *, inline_styles: bool = False) -> Response:
    headers = response.headers
    headers["Content-Security-Policy"] = content_security_policy(
        request, inline_styles=inline_styles
    )
    headers["X-Frame-Options"] = "DENY"
    headers["Referrer-Policy"] = "same-origin"
    headers["X-Content-Type-Options"] = "nosniff"
    headers["Cross-Origin-Opener-Policy"] = "same-origin"
    headers["Permissions-Policy"] = "camera=(), microphone=(), geolocation=()"
    # Pages name the signed-in account: keep them out of shared caches and the back-forward
    # cache of a browser someone else may use after sign-out.
    headers["Cache-Control"] = "no-store"
    return response


def render(
    request: Request,
    template: str,
    *,
    status: int = 200,
    terminal: bool = False,
    **context: Any,
) -> Response:
    context.setdefault("user", None)
    context.setdefault("title", None)
    context.update(
        asset_version=asset_version(),
        min_password_length=MIN_PASSWORD_LENGTH,
        terminal=terminal,
    )
    response = templates.TemplateResponse(request, template, context, status_code=status)
    return secure(response, request, inline_styles=terminal)


def not_found(request: Request, message: str | None = None, **context: Any) -> Response:
    return render(
        request,
        "not_found.html",
        status=404,
        title="Not found",
        message=message or "There is nothing here, or it is not yours to see.",
        **context,
    )
