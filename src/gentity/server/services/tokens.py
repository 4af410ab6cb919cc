"""API tokens: mint, list, revoke, and authenticate a bearer."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select
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


async def authenticate(db: AsyncSession, plaintext: str) -> tuple[ApiToken, User] | None:
    """The token row and its user, or None for anything that is not a live token.

    A malformed token or one with a bad checksum is refused before the database is asked.
    """
    if not is_well_formed(plaintext):
        return None
    found = (
        await db.execute(
            select(ApiToken, User)
            .join(User, User.id == ApiToken.user_id)
            .where(ApiToken.token_hash == token_hash(plaintext))
        )
    ).one_or_none()
    if found is None:
        return None
    token, user = found
    now = utcnow()
    if token.revoked_at is not None or user.disabled_at is not None:
        return None
    if token.expires_at is not None and token.expires_at <= now:
        return None
    if token.last_used_at is None or now - token.last_used_at >= LAST_USED_RESOLUTION:
        token.last_used_at = now
        await db.commit()
    return token, user
