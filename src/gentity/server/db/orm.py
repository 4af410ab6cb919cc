"""ORM rows. Wire shapes live in ``gentity.models``; these never leave the server."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from gentity.server.db.ids import new_id, utcnow


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite drops the zone on the way back)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        # PostgreSQL answers in the session's time zone; the API speaks UTC only.
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    type_annotation_map: dict[Any, Any] = {datetime: UTCDateTime, dict[str, Any]: JSON}


class User(Base):
    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    disabled_at: Mapped[datetime | None] = mapped_column(default=None)


class Marker(Base):
    """One-time facts, claimed by a unique insert (e.g. that the first admin exists)."""

    __tablename__ = "markers"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Session(Base):
    """A signed-in browser or CLI session; the cookie holds a secret whose sha256 is the id."""

    __tablename__ = "sessions"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column()
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)
    user_agent: Mapped[str | None] = mapped_column(String(255), default=None)
    address: Mapped[str | None] = mapped_column(String(64), default=None)
    parent_id: Mapped[str | None] = mapped_column(
        ForeignKey("sessions.id", ondelete="CASCADE"), default=None, index=True
    )
    """A session opened from another one (an instance's subdomain) ends with its parent."""
    scope_instance_id: Mapped[str | None] = mapped_column(String(32), default=None)
    """When set, the session may only view this one instance and use its terminal."""


class ApiToken(Base):
    """A ``gn_live_`` bearer token. Only the sha256 of the plaintext is stored."""

    __tablename__ = "api_tokens"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    prefix: Mapped[str] = mapped_column(String(16))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(default=None)
    expires_at: Mapped[datetime | None] = mapped_column(default=None)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)


class LoginFailure(Base):
    """A failed sign-in, counted per account and per client address for rate limiting."""

    __tablename__ = "login_failures"
    __table_args__ = (
        Index("ix_login_failures_email_at", "email", "created_at"),
        Index("ix_login_failures_address_at", "address", "created_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    email: Mapped[str] = mapped_column(String(320))
    address: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Instance(Base):
    """An agent machine. Its ``status`` is written only by ``services.instance_status``."""

    __tablename__ = "instances"
    __table_args__ = (
        Index("ix_instances_user_created", "user_id", "created_at"),
        # A user's page of live instances, in list order, whatever their destroyed history:
        # no read of destroyed rows (``services.instances.list_for``; scanned backwards).
        Index(
            "ix_instances_user_live",
            "user_id",
            "created_at",
            "id",
            postgresql_where=text("destroyed_at IS NULL"),
            sqlite_where=text("destroyed_at IS NULL"),
        ),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    subdomain: Mapped[str] = mapped_column(String(32), unique=True)
    agent_type: Mapped[str] = mapped_column(String(64))
    model_provider: Mapped[str] = mapped_column(String(64))
    model_name: Mapped[str] = mapped_column(String(128))
    region: Mapped[str | None] = mapped_column(String(64), default=None)
    cpus: Mapped[int] = mapped_column(Integer)
    memory_mb: Mapped[int] = mapped_column(Integer)
    volume_gb: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(32), index=True)
    error_message: Mapped[str | None] = mapped_column(Text, default=None)
    provider: Mapped[str] = mapped_column(String(32))
    provider_ref: Mapped[str | None] = mapped_column(String(128), default=None)
    """The provider's handle for the machine (a Fly machine id, a local process id…)."""
    provider_state: Mapped[dict[str, Any]] = mapped_column(default=dict)
    api_key_ciphertext: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)
    guest_secret_ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    env_ciphertext: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)
    """The user's ``env`` for the agent, as a sealed JSON object (None: none given)."""
    repo: Mapped[str | None] = mapped_column(String(2048), default=None)
    """A git URL the guest clones into the working directory on first start."""
    auto_stop_minutes: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    """Stop the instance after this many minutes without activity; 0 never does."""
    last_activity_at: Mapped[datetime | None] = mapped_column(default=None)
    """The latest activity known here: when it last became ``running``, or the last use its
    guest reported to the idle check (see ``server.autostop``), whichever is later."""
    restart_policy: Mapped[str] = mapped_column(String(16), default="always")
    """``always``, ``on-failure`` or ``never`` (see ``models.RestartPolicy``)."""
    recovery_attempts: Mapped[int] = mapped_column(Integer, default=0)
    """Automatic restarts of a dead machine since the user last started it (see
    ``server.recovery``)."""
    recover_at: Mapped[datetime | None] = mapped_column(default=None)
    """When the next automatic restart of a dead machine is due; None when none is."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    destroyed_at: Mapped[datetime | None] = mapped_column(default=None)
    operation_owner: Mapped[str | None] = mapped_column(String(64), default=None)
    """The node (see ``server.node``) running an operation on the instance, while one runs: a
    restarted server settles its own interrupted operations at once, not after the lease."""


#: Every column that holds a :class:`~gentity.server.security.crypto.SecretBox` ciphertext,
#: sealed with its row's ``id`` as context. ``gentity secrets rotate`` re-encrypts exactly these:
#: a new encrypted column must be listed here (a test checks every binary column is).
ENCRYPTED_COLUMNS = (
    Instance.api_key_ciphertext,
    Instance.guest_secret_ciphertext,
    Instance.env_ciphertext,
)


class InstanceEvent(Base):
    """One status change of an instance, with the reason it happened."""

    __tablename__ = "instance_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    instance_id: Mapped[str] = mapped_column(
        ForeignKey("instances.id", ondelete="CASCADE"), index=True
    )
    from_status: Mapped[str | None] = mapped_column(String(32))
    to_status: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str] = mapped_column(Text)
    actor: Mapped[str] = mapped_column(String(80), server_default="system")
    """Who asked: ``token:<id>``, ``session:<id>``, ``reconciler`` or ``system`` (see
    ``services.instance_status.ACTOR``)."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class InstancePort(Base):
    """A port of an instance whose preview URL its owner opened to everyone (``public``).

    Ports without a row are owner-only, the default; the row outlives the listener, so a
    server that restarts on the same port stays public."""

    __tablename__ = "instance_ports"

    instance_id: Mapped[str] = mapped_column(
        ForeignKey("instances.id", ondelete="CASCADE"), primary_key=True
    )
    port: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    public: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class IdempotencyKey(Base):
    """A request made with an ``Idempotency-Key`` header, and the answer it got.

    A retry with the same key (same user, same route) within 24 hours gets the stored answer
    instead of doing the work again; ``status_code`` is empty while the first is still running.
    """

    __tablename__ = "idempotency_keys"
    __table_args__ = (
        UniqueConstraint("user_id", "scope", "key", name="uq_idempotency_keys_user_scope_key"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    scope: Mapped[str] = mapped_column(String(128))
    """The method and path the key was used on: a key means one thing per route."""
    key: Mapped[str] = mapped_column(String(255))
    request_hash: Mapped[str] = mapped_column(String(64))
    """sha256 of the request body: reusing a key for a different request is refused."""
    status_code: Mapped[int | None] = mapped_column(Integer, default=None)
    response: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
