"""``/api/tokens``: list, mint and revoke API tokens."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import Response

from gentity import models
from gentity.server.auth import Auth, AuthFirstRoute, Db
from gentity.server.services import tokens

router = APIRouter(tags=["tokens"], route_class=AuthFirstRoute)


@router.get("/api/tokens", response_model=models.TokenList)
async def list_tokens(principal: Auth, db: Db) -> models.TokenList:
    rows = await tokens.list_active(db, principal.user.id)
    return models.TokenList(tokens=[tokens.to_wire(r) for r in rows])


@router.post("/api/tokens", response_model=models.TokenCreated)
async def create_token(
    body: models.TokenCreateRequest, principal: Auth, db: Db, response: Response
) -> models.TokenCreated:
    # The plaintext is in this body and nowhere else: keep it out of every cache.
    response.headers["Cache-Control"] = "no-store"
    return await tokens.mint(db, principal.user.id, body.name, body.expires_at)


@router.delete("/api/tokens/{token_id}", response_model=models.Ok)
async def revoke_token(token_id: str, principal: Auth, db: Db) -> models.Ok:
    await tokens.revoke(db, principal.user.id, token_id)
    return models.Ok()
