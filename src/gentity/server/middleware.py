"""Pure ASGI middleware: request size limit, cross-origin refusal for cookie requests, and the
security headers every response carries.

They run before routing, so they hold for every route, including ones added later.
"""

from __future__ import annotations

import re

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gentity.server.errors import json_error_bytes

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


async def _send_error(send: Send, status: int, message: str) -> None:
    body = json_error_bytes(message)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class BodySizeLimit:
    """Answer 413 when a request body is larger than ``max_bytes``.

    Checks ``Content-Length`` up front and counts streamed chunks too, so a chunked upload
    cannot slip past the limit. ``uploads`` gives the ``PUT`` routes whose path matches it a
    limit of their own (file uploads, which stream and are never held in memory).
    """

    def __init__(
        self, app: ASGIApp, max_bytes: int, uploads: tuple[re.Pattern[str], int] | None = None
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.uploads = uploads

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        max_bytes, refusal = self.max_bytes, "Request body too large"
        if (
            self.uploads is not None
            and scope["method"] == "PUT"
            and self.uploads[0].fullmatch(scope["path"])
        ):
            max_bytes = self.uploads[1]
            refusal = f"File too large: uploads are limited to {max_bytes} bytes"
        length = Headers(scope=scope).get("content-length")
        # ASCII digits only ("²".isdigit() is true, and int() refuses it), of a sane length.
        if length is not None and (
            not (length.isascii() and length.isdigit() and len(length) <= 19)
            or int(length) > max_bytes
        ):
            await _send_error(send, 413, refusal)
            return

        received = 0
        too_large = False

        async def limited_receive() -> Message:
            nonlocal received, too_large
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_bytes:
                    too_large = True
                    raise _TooLarge
            return message

        async def guarded_send(message: Message) -> None:
            # The app may turn the read failure into a response of its own (FastAPI answers
            # 400 "error parsing the body"): replace whatever it says with the 413.
            if not too_large:
                await send(message)
            elif message["type"] == "http.response.start":
                await _send_error(send, 413, refusal)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except _TooLarge:
            await _send_error(send, 413, refusal)


class _TooLarge(Exception):
    pass


class CrossOriginGuard:
    """Refuse unsafe requests (POST, DELETE, …) that a browser sent from another site.

    Cookies ride along on cross-site requests; bearer tokens do not, so a request that carries
    ``Authorization: Bearer`` is left alone. A request is cross-origin when its ``Origin`` header
    is not this server's origin, or, without ``Origin``, when ``Sec-Fetch-Site`` says so.
    Clients that are not browsers send neither header and pass.
    """

    def __init__(self, app: ASGIApp, public_origin: str | None) -> None:
        self.app = app
        self.public_origin = public_origin

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] not in SAFE_METHODS:
            headers = Headers(scope=scope)
            uses_bearer = headers.get("authorization", "").lower().startswith("bearer ")
            if not uses_bearer and self._is_cross_origin(scope, headers):
                await _send_error(send, 403, "Cross-origin request refused")
                return
        await self.app(scope, receive, send)

    def _is_cross_origin(self, scope: Scope, headers: Headers) -> bool:
        origin = headers.get("origin")
        if origin is None:
            return headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none")
        return not is_trusted_origin(origin, scope, headers, self.public_origin)


def is_trusted_origin(origin: str, scope: Scope, headers: Headers, public_url: str | None) -> bool:
    """Whether ``origin`` is this server: the request's own scheme and host, or the public URL.

    Used for unsafe HTTP requests here and for cookie-authenticated WebSocket upgrades.
    """
    scheme = {"ws": "http", "wss": "https"}.get(scope.get("scheme", "http"), scope.get("scheme"))
    trusted = {f"{scheme}://{headers.get('host', '')}".lower()}
    if public_url:
        trusted.add(public_url.rstrip("/").lower())
    return origin.rstrip("/").lower() in trusted


class SecurityHeaders:
    """Headers for every HTTP response, whatever route or error produced it.

    - ``X-Content-Type-Options: nosniff``: a JSON error that echoes input is never run as HTML.
    - ``Cache-Control: no-store`` on API responses that do not say otherwise: they carry
      tokens, sessions and account data, which no shared or browser cache should keep.
    - ``Strict-Transport-Security`` when the public URL is https, so a browser that came once
      never talks to this server (and sends its cookie) over plain http again.
    """

    def __init__(self, app: ASGIApp, *, hsts: bool) -> None:
        self.app = app
        self.hsts = hsts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        api = scope["path"].startswith("/api/")

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.setdefault("x-content-type-options", "nosniff")
                if api:
                    headers.setdefault("cache-control", "no-store")
                if self.hsts:
                    headers.setdefault("strict-transport-security", "max-age=31536000")
            await send(message)

        await self.app(scope, receive, with_headers)
