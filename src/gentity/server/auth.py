"""Who is calling: a bearer token, or a session cookie. Bearer wins when both are present."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import Depends, Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from starlette.datastructures import Headers
from starlette.requests import HTTPConnection
from starlette.responses import Response

from gentity.server.context import AppContext
from gentity.server.db.database import Database
from gentity.server.errors import unauthorized
from gentity.server.services import accounts, tokens
from gentity.server.services.credentials import Credential
from gentity.server.services.instance_status import acting

SESSION_COOKIE = "gentity_session"
# Over https the cookie gets the __Host- prefix: the browser then insists on Secure, Path=/
# and no Domain, so a sibling subdomain cannot plant or overwrite it. Only that name is then
# read: a plain ``gentity_session`` could have been planted for the parent domain by script on
# a preview host (a sibling, so the same site), which would sign the victim in as the attacker.
SECURE_SESSION_COOKIE = "__Host-gentity_session"


@dataclass(frozen=True)
class Principal:
    user: accounts.Account
    via: Literal["token", "session"]
    credential_id: str
    """The API token's or the session's id."""
    scope_instance_id: str | None = None
    """Set for a session that may only view one instance and use its terminal."""

    @property
    def credential(self) -> Credential:
        return (self.via, self.credential_id)

    @property
    def actor(self) -> str:
        """How the instance events this caller causes name it (``token:<id>``...)."""
        return f"{self.via}:{self.credential_id}"


def context(request: Request) -> AppContext:
    ctx: AppContext = request.app.state.ctx
    return ctx


async def db_session(request: Request) -> AsyncIterator[AsyncSession]:
    # AuthFirstRoute opened one to authenticate the request: the handler uses that one, so a
    # request checks out one pooled connection, not two.
    opened = getattr(request.state, "db", None)
    if isinstance(opened, AsyncSession):
        yield opened
        return
    async with context(request).db.session() as session:
        yield session


# scope="function": the session closes (and its connection goes back to the pool) when the
# handler returns, not when the response has been sent. A log follow's response lasts for
# hours; with the default scope each one would hold a pooled connection for as long, and a
# dozen followers would starve every other request.
Db = Annotated[AsyncSession, Depends(db_session, scope="function")]


async def db_connection(request: Request) -> AsyncIterator[AsyncConnection]:
    # As db_session, for a handler that only reads with Core statements: the connection
    # AuthFirstRoute authenticated on, without an ORM session around it.
    opened = getattr(request.state, "connection", None)
    if isinstance(opened, AsyncConnection):
        yield opened
        return
    async with context(request).db.connect() as connection:
        yield connection


Conn = Annotated[AsyncConnection, Depends(db_connection, scope="function")]
"""A pooled connection for a read-only handler (cheaper than ``Db``'s ORM session)."""
Ctx = Annotated[AppContext, Depends(context)]


def session_cookie_name(secure: bool) -> str:
    return SECURE_SESSION_COOKIE if secure else SESSION_COOKIE


def read_session_cookie(conn: HTTPConnection) -> str | None:
    """The session cookie's value, under the one name this connection's cookie is set with
    (``__Host-`` only over https: see :data:`SECURE_SESSION_COOKIE`)."""
    return conn.cookies.get(session_cookie_name(secure_cookie(conn))) or None


def secure_cookie(conn: HTTPConnection) -> bool:
    """Whether the session cookie must be Secure: over https, or when users reach this server
    by an https public URL (a TLS proxy in front may still talk plain http to us)."""
    ctx: AppContext = conn.app.state.ctx
    return conn.url.scheme in ("https", "wss") or ctx.settings.secure_public_url


def set_session_cookie(response: Response, secret: str, *, secure: bool, max_age: int) -> None:
    response.set_cookie(
        session_cookie_name(secure),
        secret,
        max_age=max_age,
        path="/",
        httponly=True,
        samesite="lax",
        secure=secure,
    )


def clear_session_cookie(response: Response, *, secure: bool) -> None:
    response.delete_cookie(
        session_cookie_name(secure), path="/", httponly=True, samesite="lax", secure=secure
    )


async def resolve_principal(
    db: accounts.Reader,
    headers: Headers,
    session_secret: str | None,
    query_token: str | None = None,
) -> Principal | None:
    """Authenticate from the Authorization header, a ``?token=`` value, or the session cookie's
    value (:func:`read_session_cookie`)."""
    authorization = headers.get("authorization")
    if authorization is not None or query_token is not None:
        if authorization is not None:
            scheme, _, value = authorization.partition(" ")
            if scheme.lower() != "bearer":
                return None
            plaintext = value.strip()
        else:
            plaintext = query_token or ""
        found = await tokens.authenticate(db, plaintext)
        return Principal(found[1], "token", found[0]) if found else None
    if session_secret:
        opened = await accounts.session_user(db, session_secret)
        if opened:
            return Principal(opened.account, "session", opened.id, opened.scope_instance_id)
    return None


async def authenticate_request(request: Request) -> Principal:
    """The caller of an HTTP request, or a 401; on a pooled connection of its own."""
    async with context(request).db.connect() as db:
        return await _authenticate(db, request)


async def _authenticate(db: accounts.Reader, request: Request) -> Principal:
    # A bearer token wins (resolve_principal): with one, the cookies are not even parsed.
    bearer = "authorization" in request.headers
    cookie = None if bearer else read_session_cookie(request)
    principal = await resolve_principal(db, request.headers, cookie)
    if principal is None:
        raise unauthorized()
    if principal.scope_instance_id is not None and not _within_scope(request, principal):
        raise unauthorized()
    return principal


async def require_principal(request: Request) -> Principal:
    # AuthFirstRoute has usually authenticated the request already, before reading its body.
    cached = getattr(request.state, "principal", None)
    if isinstance(cached, Principal):
        return cached
    return await authenticate_request(request)


class AuthFirstRoute(APIRoute):
    """A route that authenticates before FastAPI reads and validates the request body.

    FastAPI parses the body before it solves dependencies, so without this a malformed body
    from an anonymous caller is a 400 that describes the body instead of a 401: the caller
    learns about the route without a credential. Routes that do not depend on ``Auth`` are
    left as they are.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        if not _depends_on(self.dependant, require_principal):
            return handler
        if _depends_on(self.dependant, db_connection):
            # On a bare connection (see ``db_connection``), for handlers that only read.
            return _authenticated_on(handler, Database.connect, "connection")
        if not _depends_on(self.dependant, db_session):
            # No Db: the session closes before the handler runs, which may take minutes (a
            # create) and must not hold a pooled connection meanwhile.
            async def authenticated_alone(request: Request) -> Response:
                principal = await authenticate_request(request)
                request.state.principal = principal
                with acting(principal.actor):
                    return await handler(request)

            return authenticated_alone
        # One session for the whole request: the handler's ``Db`` is this one (see
        # ``db_session``). It closes when the handler returns, as ``Db``'s would.
        return _authenticated_on(handler, Database.session, "db")


def _authenticated_on(
    handler: Callable[[Request], Coroutine[Any, Any, Response]],
    open_db: Callable[[Database], AbstractAsyncContextManager[accounts.Reader]],
    name: str,
) -> Callable[[Request], Coroutine[Any, Any, Response]]:
    """``handler`` authenticated on what ``open_db`` opens, which it then gets as
    ``request.state.<name>`` until it returns."""

    async def authenticated(request: Request) -> Response:
        async with open_db(context(request).db) as db:
            principal = await _authenticate(db, request)
            request.state.principal = principal
            setattr(request.state, name, db)
            try:
                # Status changes this request causes (also in the operations it starts) say
                # who.
                with acting(principal.actor):
                    return await handler(request)
            finally:
                delattr(request.state, name)

    return authenticated


def _depends_on(dependant: Dependant, call: Callable[..., Any]) -> bool:
    return any(d.call is call or _depends_on(d, call) for d in dependant.dependencies)


def _within_scope(request: Request, principal: Principal) -> bool:
    # A subdomain's session may read its own instance and, as in its terminal, run commands
    # there; nothing else through the REST API.
    own = f"/api/instances/{principal.scope_instance_id}"
    if request.method == "POST" and request.url.path == f"{own}/exec":
        return True
    return request.method == "GET" and request.url.path == own


Auth = Annotated[Principal, Depends(require_principal)]
