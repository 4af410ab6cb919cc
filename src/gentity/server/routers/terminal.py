"""``GET /api/instances/<id>/terminal``: a WebSocket onto the instance's agent session.

Authentication happens before the upgrade: ``?token=``, a bearer header, or the session cookie
(then the ``Origin`` must be this server's, or any page on the web could drive the terminal
with the visitor's cookie). Refusals are plain HTTP answers with the usual error body.

Protocol (JSON text messages)::

    client → server  {"type": "input", "data": "ls\\r"}
                     {"type": "resize", "cols": 120, "rows": 32}
    server → client  {"type": "output", "data": "..."}
                     {"type": "exit", "exitCode": 0, "signal": null}

``?shell=1`` opens a fresh shell for this viewer instead of attaching to the agent's session.

Close codes: 4000 means "fell behind, reconnect" (the session goes on); 4401 means the token or
session that opened the socket was revoked or expired, or its user disabled: sign in again.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import json
import logging
from typing import Any, TypeGuard

from fastapi import APIRouter, WebSocket
from starlette.responses import JSONResponse
from starlette.websockets import WebSocketDisconnect

from gentity.guest import client as guest_client
from gentity.guest.protocol import Exit, Output
from gentity.providers.compute.base import ProviderError, ProviderUnavailable
from gentity.server.auth import Principal, read_session_cookie, resolve_principal
from gentity.server.context import AppContext
from gentity.server.errors import ApiError, answer_for
from gentity.server.middleware import is_trusted_origin
from gentity.server.params import parse_int
from gentity.server.services import terminal as terminal_service
from gentity.server.services.errors import DomainError

router = APIRouter(tags=["terminal"])
log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 256 * 1024
# Closed without an ``exit`` message: the session goes on, reconnect to see it (with replay).
LAGGED_CLOSE_CODE = 4000
# The token or session that opened the terminal was revoked, expired, or its user disabled:
# reconnecting with it will not work, sign in again. (4401 echoes HTTP 401.)
REVOKED_CLOSE_CODE = 4401
REVOKED_REASON = "Unauthorized: the credential was revoked or has expired"
# Terminal dimensions the guest accepts.
MAX_SIZE = 1000


@router.websocket("/api/instances/{instance_id}/terminal")
async def terminal(websocket: WebSocket, instance_id: str) -> None:
    ctx: AppContext = websocket.app.state.ctx
    principal = await _authenticate(ctx, websocket)
    if principal is None:
        await _deny(websocket, 401, "Unauthorized")
        return
    try:
        cols, rows = _size(websocket, "cols"), _size(websocket, "rows")
        session = await terminal_service.open_session(
            ctx,
            principal.user.id,
            instance_id,
            scope_instance_id=principal.scope_instance_id,
            op="shell" if websocket.query_params.get("shell") in ("1", "true") else "attach",
            cols=cols,
            rows=rows,
        )
    except (ApiError, DomainError, ProviderError, ProviderUnavailable) as exc:
        # Exception handlers do not see WebSockets: the refusal is answered here, by the table.
        status, message, _ = answer_for(exc)
        await _deny(websocket, status, message)
        return
    # Registered before the upgrade, so a revocation from now on ends this terminal.
    with ctx.credentials.watch(principal.credential, "terminal") as ended:
        await websocket.accept()
        async with session:
            await _pipe(websocket, session, ended)


async def _authenticate(ctx: AppContext, websocket: WebSocket) -> Principal | None:
    headers = websocket.headers
    token = websocket.query_params.get("token")
    uses_cookie = token is None and "authorization" not in headers
    origin = headers.get("origin") or ""
    if uses_cookie and not is_trusted_origin(
        origin, websocket.scope, headers, ctx.settings.public_url
    ):
        return None
    async with ctx.db.session() as db:
        return await resolve_principal(db, headers, read_session_cookie(websocket), token)


async def _deny(websocket: WebSocket, status: int, message: str) -> None:
    """Refuse before the upgrade, with an HTTP status and the usual error body."""
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(JSONResponse({"error": message}, status_code=status))
    else:
        await websocket.close(code=1008, reason=message[:120])


def _size(websocket: WebSocket, name: str) -> int | None:
    raw = websocket.query_params.get(name)
    return None if raw is None else parse_int(raw, name, 1, MAX_SIZE, default=1)


async def _pipe(
    websocket: WebSocket, session: guest_client.GuestSession, ended: asyncio.Event
) -> None:
    """Copy both ways until either side ends or the credential is revoked; the agent keeps
    running after we leave."""

    async def guest_to_browser() -> None:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        while True:
            try:
                frame = await session.read()
            except guest_client.GuestError:
                frame = None  # cut off mid-frame: the guest dropped us
            if isinstance(frame, Output):
                text = decoder.decode(frame.data)
                if text:
                    await websocket.send_text(_output(text))
            elif isinstance(frame, Exit):
                tail = decoder.decode(b"", final=True)
                if tail:
                    await websocket.send_text(_output(tail))
                await websocket.send_text(
                    _message("exit", exitCode=frame.exit_code, signal=frame.signal)
                )
                return
            else:
                # The guest dropped this viewer (it fell too far behind the output) or went
                # away: say so, so the client reconnects instead of taking it for the end.
                await websocket.close(code=LAGGED_CLOSE_CODE, reason="reconnect to continue")
                return

    async def browser_to_guest() -> None:
        while True:
            raw = await websocket.receive_text()
            if len(raw) > MAX_MESSAGE_BYTES:
                continue
            try:
                message = json.loads(raw)
            except ValueError:
                continue
            if not isinstance(message, dict):
                continue
            kind = message.get("type")
            if kind == "input" and isinstance(message.get("data"), str):
                await session.send_input(message["data"].encode())
            elif kind == "resize":
                cols, rows = message.get("cols"), message.get("rows")
                if _valid_size(cols) and _valid_size(rows):
                    await session.resize(cols, rows)

    async def revoked() -> None:
        await ended.wait()
        await websocket.close(code=REVOKED_CLOSE_CODE, reason=REVOKED_REASON)

    tasks = [
        asyncio.create_task(guest_to_browser()),
        asyncio.create_task(browser_to_guest()),
        asyncio.create_task(revoked()),
    ]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, Exception):
                await task
        with contextlib.suppress(Exception):
            await websocket.close()


def _valid_size(value: object) -> TypeGuard[int]:
    # bool is an int to Python, and a size past the guest's limit is noise: ignore both.
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_SIZE


def _message(kind: str, **fields: Any) -> str:
    return json.dumps({"type": kind, **fields}, separators=(",", ":"))


def _output(text: str) -> str:
    """``{"type":"output","data":...}``, as :func:`_message` writes it, without building a
    dict and an encoder for every chunk: the hot path of keystrokes and bulk output alike.
    Non-ASCII text goes in as it is (valid JSON, and a third the size of ``\\uXXXX``)."""
    return '{"type":"output","data":' + _json_string(text) + "}"


_json_string = json.encoder.encode_basestring
