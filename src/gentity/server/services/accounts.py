"""Users, sign-in sessions and the sign-in rate limit."""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.orm import aliased

from gentity.server.db.ids import utcnow
from gentity.server.db.orm import LoginFailure, Marker, Session, User
from gentity.server.security.passwords import MIN_PASSWORD_LENGTH, hash_password, verify_password
from gentity.server.security.tokens import token_hash
from gentity.server.services.errors import (
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
    RateLimited,
    Unauthenticated,
)
from gentity.settings import Settings

FIRST_ADMIN_MARKER = "first-admin"
# Sessions are touched at most this often, so reads do not turn into writes on every request.
TOUCH_INTERVAL = timedelta(minutes=1)
# The wait before answering a sign-in on an account that has failed too often from anywhere:
# doubling from this per failure past the limit, never more than the maximum.
SLOWDOWN_BASE_SECONDS = 0.5
MAX_SLOWDOWN_SECONDS = 10.0


def normalize_email(email: str) -> str:
    email = email.strip().lower()
    local, sep, domain = email.partition("@")
    if not sep or not local or "." not in domain or " " in email:
        raise InvalidInput("email: not a valid email address")
    return email


async def count_users(db: AsyncSession) -> int:
    return int(await db.scalar(select(func.count()).select_from(User)) or 0)


async def create_user(db: AsyncSession, email: str, password: str, *, admin: bool) -> User:
    """Create an account. The very first account is always an admin.

    Claiming the first-admin marker inside the same transaction means two concurrent first-run
    requests cannot both become the first admin: the second insert of the marker fails.
    """
    email = normalize_email(email)
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidInput(f"password: must be at least {MIN_PASSWORD_LENGTH} characters")
    first = await count_users(db) == 0
    user = User(email=email, password_hash=await hash_password(password), is_admin=admin or first)
    db.add(user)
    if first:
        db.add(Marker(name=FIRST_ADMIN_MARKER))
    try:
        await db.commit()
    except IntegrityError as exc:
        await db.rollback()
        if first and await count_users(db) > 0:
            raise Conflict("the first account already exists") from exc
        raise Conflict(f"an account for {email} already exists") from exc
    return user


async def set_disabled(db: AsyncSession, email: str, *, disabled: bool) -> User:
    """Disable (or enable again) an account. A disabled user's tokens and sessions stop
    working at once, and their open log streams and terminals end within seconds."""
    user = await db.scalar(select(User).where(User.email == normalize_email(email)))
    if user is None:
        raise NotFound(f"no account for {email.strip().lower()}")
    user.disabled_at = (user.disabled_at or utcnow()) if disabled else None
    await db.commit()
    return user


@dataclass
class OpenedSession:
    row: Session
    secret: str
    """The cookie value; only its sha256 is stored."""


@dataclass
class SignedIn:
    user: User
    session: OpenedSession


@dataclass(frozen=True)
class SignupState:
    setup_required: bool
    """No account exists yet: the next sign-up creates the admin."""
    signup_open: bool


async def signup_state(db: AsyncSession, settings: Settings) -> SignupState:
    setup_required = await count_users(db) == 0
    return SignupState(setup_required, setup_required or settings.allow_signup)


async def sign_up(
    db: AsyncSession,
    settings: Settings,
    *,
    email: str,
    password: str,
    address: str,
    user_agent: str | None,
) -> SignedIn:
    """Create an account and sign it in: always possible for the very first one (it becomes
    the admin), afterwards only when ``GENTITY_ALLOW_SIGNUP`` is on."""
    if not (await signup_state(db, settings)).signup_open:
        raise Forbidden("Sign-up is closed; ask an administrator for an account")
    await create_user(db, email, password, admin=False)
    return await sign_in(
        db, settings, email=email, password=password, address=address, user_agent=user_agent
    )


async def sign_in(
    db: AsyncSession,
    settings: Settings,
    *,
    email: str,
    password: str,
    address: str,
    user_agent: str | None,
) -> SignedIn:
    """Check the password and open a session (``Unauthenticated`` if wrong, ``RateLimited``
    after too many failures).

    Failures are counted per (account, address) pair and per address; over either limit,
    only that pair or that address is refused, so an attacker can lock out neither everyone
    nor the owner of the account they guess at (who signs in from elsewhere). Past the same
    limit counted over all addresses, every attempt on the account is slowed down instead:
    guessing from many addresses gets slow, and the owner still gets in, a little later.
    """
    email = email.strip().lower()
    now = utcnow()
    window_start = now - timedelta(seconds=settings.login_failure_window_seconds)
    by_pair = await _failures(
        db, (LoginFailure.email == email) & (LoginFailure.address == address), window_start
    )
    by_address = await _failures(db, LoginFailure.address == address, window_start)
    if (
        by_pair >= settings.login_max_failures_per_account
        or by_address >= settings.login_max_failures_per_address
    ):
        raise RateLimited(
            "Too many failed sign-in attempts; try again later",
            retry_after=settings.login_failure_window_seconds,
        )
    by_account = await _failures(db, LoginFailure.email == email, window_start)
    excess = by_account - settings.login_max_failures_per_account
    if excess >= 0:
        # End the transaction first, so the wait holds no database connection.
        await db.commit()
        await asyncio.sleep(min(MAX_SLOWDOWN_SECONDS, SLOWDOWN_BASE_SECONDS * 2 ** min(excess, 8)))
        now = utcnow()
    user = await db.scalar(select(User).where(User.email == email))
    ok = await verify_password(user.password_hash if user else None, password)
    if not ok or user is None or user.disabled_at is not None:
        db.add(LoginFailure(email=email, address=address, created_at=now))
        await db.commit()
        raise Unauthenticated("Invalid email or password")
    # Only this address's failures are forgiven: others' guesses still count against them.
    await db.execute(
        delete(LoginFailure).where(LoginFailure.email == email, LoginFailure.address == address)
    )
    opened = await open_session(
        db,
        user.id,
        expires_at=now + timedelta(hours=settings.session_ttl_hours),
        user_agent=user_agent,
        address=address,
    )
    return SignedIn(user, opened)


async def open_session(
    db: AsyncSession,
    user_id: str,
    *,
    expires_at: datetime,
    user_agent: str | None,
    address: str,
    parent_id: str | None = None,
    scope_instance_id: str | None = None,
) -> OpenedSession:
    """Open a session for an already authenticated user. Commits."""
    now = utcnow()
    secret = secrets.token_urlsafe(32)
    row = Session(
        secret_hash=token_hash(secret),
        user_id=user_id,
        created_at=now,
        last_seen_at=now,
        expires_at=expires_at,
        user_agent=(user_agent or "")[:255] or None,
        address=address[:64],
        parent_id=parent_id,
        scope_instance_id=scope_instance_id,
    )
    db.add(row)
    await db.commit()
    return OpenedSession(row=row, secret=secret)


async def _failures(db: AsyncSession, condition: object, since: datetime) -> int:
    query = (
        select(func.count())
        .select_from(LoginFailure)
        .where(
            condition,  # type: ignore[arg-type]
            LoginFailure.created_at >= since,
        )
    )
    return int(await db.scalar(query) or 0)


@dataclass(frozen=True, slots=True)
class Account:
    """A signed-in user as authentication reads it: plain values, not an ORM row, so they
    outlive the database session that read them."""

    id: str
    email: str
    is_admin: bool
    created_at: datetime


@dataclass(frozen=True, slots=True)
class OpenSession:
    """A live sign-in session found by its cookie value."""

    id: str
    scope_instance_id: str | None
    account: Account


Reader = AsyncSession | AsyncConnection
"""Authentication reads on the request's session when it has one, else on a bare pooled
connection (no ORM session: it is on every request's path, and costs several times the
query)."""

_sessions = Session.__table__
_users = User.__table__
_parents = aliased(Session.__table__)
_SESSION_LOOKUP = (
    select(
        _sessions.c.id,
        _sessions.c.expires_at,
        _sessions.c.revoked_at,
        _sessions.c.last_seen_at,
        _sessions.c.scope_instance_id,
        _sessions.c.parent_id,
        _parents.c.expires_at.label("parent_expires_at"),
        _parents.c.revoked_at.label("parent_revoked_at"),
        _users.c.id.label("user_id"),
        _users.c.email,
        _users.c.is_admin,
        _users.c.created_at,
        _users.c.disabled_at,
    )
    .join(_users, _users.c.id == _sessions.c.user_id)
    .outerjoin(_parents, _parents.c.id == _sessions.c.parent_id)
    .where(_sessions.c.secret_hash == bindparam("digest"))
)


async def read(db: Reader, statement: Any, params: dict[str, Any]) -> Any:
    """One row of a Core ``statement`` (or None), on the session's connection or ``db``."""
    connection = await db.connection() if isinstance(db, AsyncSession) else db
    return (await connection.execute(statement, params)).one_or_none()


async def touch(db: Reader, statement: Any) -> None:
    """Write a last-seen time and commit it, on whichever ``db`` authentication used."""
    await db.execute(statement)
    await db.commit()


async def session_user(db: Reader, secret: str) -> OpenSession | None:
    """The live session and its user for a cookie value, or None (one query: a subdomain
    session's parent is read with it)."""
    now = utcnow()
    row = await read(db, _SESSION_LOOKUP, {"digest": token_hash(secret)})
    if row is None or row.revoked_at is not None or row.expires_at <= now or row.disabled_at:
        return None
    if row.parent_id is not None and (
        row.parent_expires_at is None  # the parent row is gone
        or row.parent_revoked_at is not None
        or row.parent_expires_at <= now
    ):
        return None
    if now - row.last_seen_at >= TOUCH_INTERVAL:
        await touch(db, update(Session).where(Session.id == row.id).values(last_seen_at=now))
    account = Account(row.user_id, row.email, row.is_admin, row.created_at)
    return OpenSession(row.id, row.scope_instance_id, account)


def _live(session: Session, now: datetime) -> bool:
    return session.revoked_at is None and session.expires_at > now


async def sign_out(db: AsyncSession, secret: str | None) -> None:
    """End the session whose cookie value is ``secret``, if it is live."""
    opened = await session_user(db, secret) if secret else None
    if opened is not None:
        await revoke_session(db, opened.account.id, opened.id)


async def list_sessions(db: AsyncSession, user_id: str) -> list[Session]:
    rows = await db.scalars(
        select(Session)
        .where(
            Session.user_id == user_id, Session.revoked_at.is_(None), Session.expires_at > utcnow()
        )
        .order_by(Session.created_at.desc())
    )
    return list(rows)


async def revoke_session(db: AsyncSession, user_id: str, session_id: str) -> bool:
    session = await db.scalar(
        select(Session).where(
            Session.id == session_id, Session.user_id == user_id, Session.revoked_at.is_(None)
        )
    )
    if session is None:
        return False
    now = utcnow()
    session.revoked_at = now
    # Sessions opened from this one (on instance subdomains) end with it.
    await db.execute(
        update(Session)
        .where(Session.parent_id == session_id, Session.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    await db.commit()
    return True
