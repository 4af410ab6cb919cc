"""The one-time handoff that signs a dashboard user in on an instance's subdomain.

The session cookie is host-only, so a browser signed in on ``localhost:8080`` sends nothing to
``cl-x7k2m9.localhost:8080``. The dashboard therefore sends the user through
``/dashboard/open/<subdomain>``, which mints a *handoff code* and redirects to
``http://<subdomain>.localhost:8080/?handoff=<code>``; that host redeems the code for a session
cookie of its own and redirects to its clean URL.

A code is the AES-GCM encryption (under the server's secret key) of who, which instance, which
dashboard session and until when. So it cannot be forged or altered, and it says nothing to
whoever sees it. It is

- short-lived: valid for 60 seconds;
- single-use: redeeming inserts a ``markers`` row named after its nonce, and a second insert
  of the same name fails (this holds across replicas sharing one database);
- bound to the user, the instance and its subdomain: it is refused on any other host, and
  when the instance is gone or changed hands; a code for a port's preview host
  (``<port>-<subdomain>``, see ``web/preview.py``) names the port too, and a terminal's
  code is no good there, nor the other way round;
- bound to the dashboard session it came from: it is refused once that session has ended, and
  the subdomain's session is its child: it ends when the dashboard session ends (sign-out), and
  it is scoped to that one instance (its details and its terminal, nothing else).
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from gentity.server.db.ids import utcnow
from gentity.server.db.orm import Instance, Marker, Session
from gentity.server.security.crypto import SecretBox, SecretBoxError
from gentity.server.services import accounts

HANDOFF_TTL = timedelta(seconds=60)
# Associated data for the encryption: a code cannot be confused with any other ciphertext.
_CONTEXT = "gentity-web-handoff-v1"
MARKER_PREFIX = "handoff:"
# Used-code markers are kept a while past the codes' lifetime, then pruned.
_MARKER_RETENTION = timedelta(minutes=5)


@dataclass(frozen=True)
class Handoff:
    user_id: str
    instance_id: str
    subdomain: str
    session_id: str
    expires_at: datetime
    nonce: str
    port: int | None = None
    """The preview port the code is for; None for the full-screen terminal."""


@dataclass(frozen=True)
class SubdomainSession:
    secret: str
    """The cookie value for the subdomain host; only its sha256 is stored."""
    expires_at: datetime


def mint(
    box: SecretBox,
    *,
    user_id: str,
    instance_id: str,
    subdomain: str,
    session_id: str,
    now: datetime | None = None,
    port: int | None = None,
) -> str:
    expires = (now or utcnow()) + HANDOFF_TTL
    payload = {
        "u": user_id,
        "i": instance_id,
        "d": subdomain,
        "s": session_id,
        "e": expires.timestamp(),
        "n": secrets.token_hex(16),
    }
    if port is not None:
        payload["p"] = port
    blob = box.encrypt(json.dumps(payload, separators=(",", ":")), context=_CONTEXT)
    return base64.urlsafe_b64encode(blob).rstrip(b"=").decode()


def open_code(box: SecretBox, code: str) -> Handoff | None:
    """The handoff inside ``code``, or None when it was not minted by this server."""
    if not code or len(code) > 1024:
        return None
    try:
        blob = base64.urlsafe_b64decode(code + "=" * (-len(code) % 4))
        data = json.loads(box.decrypt(blob, context=_CONTEXT))
        return Handoff(
            user_id=str(data["u"]),
            instance_id=str(data["i"]),
            subdomain=str(data["d"]),
            session_id=str(data["s"]),
            expires_at=datetime.fromtimestamp(float(data["e"]), tz=UTC),
            nonce=str(data["n"]),
            port=int(data["p"]) if "p" in data else None,
        )
    except (binascii.Error, ValueError, KeyError, TypeError, SecretBoxError):
        return None


async def redeem(
    db: AsyncSession,
    box: SecretBox,
    code: str,
    *,
    subdomain: str,
    user_agent: str | None,
    address: str,
    port: int | None = None,
) -> SubdomainSession | None:
    """Use up ``code`` on ``subdomain``'s host (``port``'s preview host when given) and open a
    session there, or None if refused."""
    handoff = open_code(box, code)
    now = utcnow()
    if (
        handoff is None
        or handoff.subdomain != subdomain
        or handoff.port != port
        or handoff.expires_at <= now
    ):
        return None
    if not await _claim(db, handoff.nonce):
        return None
    parent = await db.get(Session, handoff.session_id)
    if (
        parent is None
        or parent.user_id != handoff.user_id
        or parent.revoked_at is not None
        or parent.expires_at <= now
        # Only a dashboard session hands over; a subdomain's own session never does.
        or parent.scope_instance_id is not None
    ):
        return None
    instance = await db.scalar(
        select(Instance).where(
            Instance.id == handoff.instance_id,
            Instance.user_id == handoff.user_id,
            Instance.subdomain == subdomain,
            Instance.destroyed_at.is_(None),
        )
    )
    if instance is None:
        return None
    opened = await accounts.open_session(
        db,
        handoff.user_id,
        expires_at=parent.expires_at,
        user_agent=user_agent,
        address=address,
        parent_id=parent.id,
        scope_instance_id=instance.id,
    )
    return SubdomainSession(secret=opened.secret, expires_at=parent.expires_at)


async def _claim(db: AsyncSession, nonce: str) -> bool:
    """Mark the code used; False when it already was (by this or another replica)."""
    await db.execute(
        delete(Marker).where(
            Marker.name.startswith(MARKER_PREFIX),
            Marker.created_at < utcnow() - _MARKER_RETENTION,
        )
    )
    db.add(Marker(name=MARKER_PREFIX + nonce))
    try:
        await db.commit()
    except IntegrityError:
        await db.rollback()
        return False
    return True
