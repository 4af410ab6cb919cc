"""``X-Forwarded-For`` and ``X-Forwarded-Proto``, believed only from ``GENTITY_TRUSTED_PROXIES``.

Anyone can send these headers. Believed from everyone, they let a client pick the address the
sign-in limits count against and the scheme cookies are set for; believed from loopback (as
uvicorn does by default) they let any process on the host, an instance included, do the same.
So the connection's own address decides: a listed proxy is believed, nobody else is.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _is_listed(host: str, networks: Sequence[Network]) -> bool:
    try:
        address = ipaddress.ip_address(host.strip())
    except ValueError:
        return False
    return any(address in network for network in networks)


def forwarded_client(chain: str, networks: Sequence[Network]) -> str | None:
    """The client in an ``X-Forwarded-For`` chain: the right-most hop that is not a trusted
    proxy (entries left of it could have been written by the client itself)."""
    hops = [hop.strip() for hop in chain.split(",") if hop.strip()]
    for hop in reversed(hops):
        if not _is_listed(hop, networks):
            return hop if _is_address(hop) else None
    return hops[0] if hops else None


def _is_address(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


class TrustedProxyHeaders:
    """Rewrite the scope's client and scheme from a trusted proxy's forwarding headers."""

    def __init__(self, app: ASGIApp, networks: Sequence[Network]) -> None:
        self.app = app
        self.networks = tuple(networks)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        client = scope.get("client")
        if (
            scope["type"] in ("http", "websocket")
            and self.networks
            and client
            and _is_listed(client[0], self.networks)
        ):
            headers = Headers(scope=scope)
            scope = dict(scope)
            proto = headers.get("x-forwarded-proto", "").split(",")[-1].strip().lower()
            if proto in ("http", "https"):
                secure = proto == "https"
                if scope["type"] == "websocket":
                    scope["scheme"] = "wss" if secure else "ws"
                else:
                    scope["scheme"] = proto
            forwarded = forwarded_client(headers.get("x-forwarded-for", ""), self.networks)
            if forwarded is not None:
                scope["client"] = (forwarded, 0)
        await self.app(scope, receive, send)
