"""API tokens: mint, list, revoke, and authenticate a bearer."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from gentity import models
from gentity.server.db.ids import utcnow
from gentity.server.db.orm import ApiToken, User
from gentity.server.security.tokens import (
    display_prefix,
    generate_token,
    is_well_formed,
    token_hash,
)
from gentity.server.services import accounts
from gentity.server.services.errors import InvalidInput, NotFound

# last_used_at is written at most this often, so authenticating stays a read.
LAST_USED_RESOLUTION = timedelta(minutes=1)


def to_wire(row: ApiToken) -> models.TokenRecord:
    return models.TokenRecord(
        id=row.id,
        name=row.name,
        prefix=row.prefix,
        created_at=row.created_at,
        last_used_at=row.last_used_at,
        expires_at=row.expires_at,
    )


async def mint(
    db: AsyncSession, user_id: str, name: str, expires_at: datetime | None
) -> models.TokenCreated:
    if expires_at is not None and expires_at <= utcnow():
        raise InvalidInput("expiresAt: must be in the future")
    plaintext = generate_token()
    row = ApiToken(
        user_id=user_id,
        name=name.strip() or name,
        prefix=display_prefix(plaintext),
        token_hash=token_hash(plaintext),
        expires_at=expires_at,
    )
    db.add(row)
    await db.commit()
    return models.TokenCreated(token=plaintext, record=to_wire(row))


async def list_active(db: AsyncSession, user_id: str) -> list[ApiToken]:
    rows = await db.scalars(
        select(ApiToken)
        .where(ApiToken.user_id == user_id, ApiToken.revoked_at.is_(None))
        .order_by(ApiToken.created_at.desc(), ApiToken.id)
    )
    return list(rows)


async def revoke(db: AsyncSession, user_id: str, token_id: str) -> None:
    """Soft delete: the row stays for audit, the token stops working at once."""
    row = await db.scalar(
        select(ApiToken).where(
            ApiToken.id == token_id, ApiToken.user_id == user_id, ApiToken.revoked_at.is_(None)
        )
    )
    if row is None:
        raise NotFound()
    row.revoked_at = utcnow()
    await db.commit()


_tokens = ApiToken.__table__
_users = User.__table__
_TOKEN_LOOKUP = (
    select(
        _tokens.c.id,
        _tokens.c.expires_at,
        _tokens.c.revoked_at,
        _tokens.c.last_used_at,
        _users.c.id.label("user_id"),
        _users.c.email,
        _users.c.is_admin,
        _users.c.created_at,
        _users.c.disabled_at,
    )
    .join(_users, _users.c.id == _tokens.c.user_id)
    .where(_tokens.c.token_hash == bindparam("digest"))
)


async def authenticate(db: accounts.Reader, plaintext: str) -> tuple[str, accounts.Account] | None:
    """The token's id and its user, or None for anything that is not a live token.

    A malformed token or one with a bad checksum is refused before the database is asked.
    """
    if not is_well_formed(plaintext):
        return None
    row = await accounts.read(db, _TOKEN_LOOKUP, {"digest": token_hash(plaintext)})
    if row is None:
        return None
    now = utcnow()
    if row.revoked_at is not None or row.disabled_at is not None:
        return None
    if row.expires_at is not None and row.expires_at <= now:
        return None
    if row.last_used_at is None or now - row.last_used_at >= LAST_USED_RESOLUTION:
        stamp = update(ApiToken).where(ApiToken.id == row.id).values(last_used_at=now)
        await accounts.touch(db, stamp)
    return row.id, accounts.Account(row.user_id, row.email, row.is_admin, row.created_at)
