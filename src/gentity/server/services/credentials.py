"""Which credentials (API tokens, sign-in sessions) are still good, asked for many at once.

The rules are those of ``tokens.authenticate`` and ``accounts.session_user``: not revoked, not
expired, the user not disabled, and for a subdomain session its parent session still live.
Open streams are re-checked with this, so it answers a whole batch in one round trip.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from sqlalchemy import literal, or_, select, union_all
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from gentity.server.db.ids import utcnow
from gentity.server.db.orm import ApiToken, Session, User

Kind = Literal["token", "session"]
Credential = tuple[Kind, str]
"""``("token", <api token id>)`` or ``("session", <session id>)``, as in ``auth.Principal``."""

# Bound the size of one IN list; a process with more open streams asks in several batches.
_BATCH = 500


async def live(db: AsyncSession, credentials: Iterable[Credential]) -> set[Credential]:
    """The subset of ``credentials`` that would still authenticate now."""
    wanted = list(dict.fromkeys(credentials))
    found: set[Credential] = set()
    for start in range(0, len(wanted), _BATCH):
        found |= await _live_batch(db, wanted[start : start + _BATCH])
    return found


async def _live_batch(db: AsyncSession, batch: list[Credential]) -> set[Credential]:
    token_ids = [cid for kind, cid in batch if kind == "token"]
    session_ids = [cid for kind, cid in batch if kind == "session"]
    now = utcnow()
    parent = aliased(Session)
    tokens = (
        select(literal("token").label("kind"), ApiToken.id.label("id"))
        .join(User, User.id == ApiToken.user_id)
        .where(
            ApiToken.id.in_(token_ids),
            ApiToken.revoked_at.is_(None),
            or_(ApiToken.expires_at.is_(None), ApiToken.expires_at > now),
            User.disabled_at.is_(None),
        )
    )
    sessions = (
        select(literal("session").label("kind"), Session.id.label("id"))
        .join(User, User.id == Session.user_id)
        .outerjoin(parent, parent.id == Session.parent_id)
        .where(
            Session.id.in_(session_ids),
            Session.revoked_at.is_(None),
            Session.expires_at > now,
            User.disabled_at.is_(None),
            or_(
                Session.parent_id.is_(None),
                (parent.revoked_at.is_(None)) & (parent.expires_at > now),
            ),
        )
    )
    rows = await db.execute(union_all(tokens, sessions))
    return {(row.kind, row.id) for row in rows}
