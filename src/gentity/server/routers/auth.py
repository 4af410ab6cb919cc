"""Sign-in, sign-out, first-run sign-up, and the caller's own sessions."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from gentity import models
from gentity.server.auth import (
    Auth,
    AuthFirstRoute,
    Ctx,
    Db,
    clear_session_cookie,
    read_session_cookie,
    secure_cookie,
    set_session_cookie,
)
from gentity.server.context import AppContext
from gentity.server.db.orm import User
from gentity.server.openapi import errors
from gentity.server.services import accounts
from gentity.server.services.errors import NotFound

router = APIRouter(prefix="/api/auth", tags=["auth"], route_class=AuthFirstRoute)


def _user_info(user: User | accounts.Account) -> models.UserInfo:
    return models.UserInfo.model_validate(user, from_attributes=True)


def _client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _signed_in(
    request: Request, response: Response, ctx: AppContext, signed: accounts.SignedIn
) -> models.UserInfo:
    set_session_cookie(
        response,
        signed.session.secret,
        secure=secure_cookie(request),
        max_age=ctx.settings.session_ttl_hours * 3600,
    )
    return _user_info(signed.user)


@router.get("/status")
async def status(ctx: Ctx, db: Db) -> dict[str, bool]:
    """Public: whether the first account still has to be created, and whether sign-up is open."""
    state = await accounts.signup_state(db, ctx.settings)
    return {"setupRequired": state.setup_required, "signupOpen": state.signup_open}


@router.post("/login", response_model=models.UserInfo, responses=errors(401, 429))
async def login(
    body: models.LoginRequest, request: Request, response: Response, ctx: Ctx, db: Db
) -> models.UserInfo:
    signed = await accounts.sign_in(
        db,
        ctx.settings,
        email=body.email,
        password=body.password,
        address=_client_address(request),
        user_agent=request.headers.get("user-agent"),
    )
    return _signed_in(request, response, ctx, signed)


@router.post("/signup", response_model=models.UserInfo, responses=errors(409, 429))
async def signup(
    body: models.SignupRequest, request: Request, response: Response, ctx: Ctx, db: Db
) -> models.UserInfo:
    """Create an account: always possible for the very first one (it becomes the admin),
    afterwards only when ``GENTITY_ALLOW_SIGNUP`` is on. Signs the new user in."""
    signed = await accounts.sign_up(
        db,
        ctx.settings,
        email=body.email,
        password=body.password,
        address=_client_address(request),
        user_agent=request.headers.get("user-agent"),
    )
    return _signed_in(request, response, ctx, signed)


@router.post("/logout", response_model=models.Ok)
async def logout(request: Request, response: Response, db: Db) -> models.Ok:
    """End the cookie's session. Always succeeds, so a stale tab can sign out too."""
    await accounts.sign_out(db, read_session_cookie(request))
    clear_session_cookie(response, secure=secure_cookie(request))
    return models.Ok()


@router.get("/me", response_model=models.UserInfo)
async def me(principal: Auth) -> models.UserInfo:
    return _user_info(principal.user)


@router.get("/sessions", response_model=models.SessionList)
async def list_sessions(principal: Auth, db: Db) -> models.SessionList:
    rows = await accounts.list_sessions(db, principal.user.id)
    current = principal.credential_id if principal.via == "session" else None
    return models.SessionList(
        sessions=[
            models.SessionInfo(
                id=r.id,
                created_at=r.created_at,
                expires_at=r.expires_at,
                last_seen_at=r.last_seen_at,
                user_agent=r.user_agent,
                address=r.address,
                current=r.id == current,
            )
            for r in rows
        ]
    )


@router.delete("/sessions/{session_id}", response_model=models.Ok)
async def revoke_session(session_id: str, principal: Auth, db: Db) -> models.Ok:
    if not await accounts.revoke_session(db, principal.user.id, session_id):
        raise NotFound()
    return models.Ok()
