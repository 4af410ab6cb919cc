"""Which host a page request came in on: the main dashboard host, or an instance's subdomain.

Every instance has a subdomain. ``http://<sub>.localhost:<port>/`` works with no DNS at all
(browsers resolve ``*.localhost`` to the loopback address); with ``GENTITY_PUBLIC_URL`` set to
``https://gentity.example.com``, ``https://<sub>.gentity.example.com/`` does too, given a
wildcard DNS record and certificate.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from starlette.requests import HTTPConnection, Request

from gentity.settings import Settings

# One DNS label: what the server hands out as subdomains (``cl-x7k2m9``).
_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
# What a Host header may contain before it is echoed into a header or a URL.
_HOST = re.compile(r"^[A-Za-z0-9.\-]+(?::[0-9]{1,5})?$|^\[[0-9A-Fa-f:.]+\](?::[0-9]{1,5})?$")


@dataclass(frozen=True)
class HostName:
    """A parsed ``Host`` header: lowercase name and optional port."""

    name: str
    port: int | None

    @property
    def netloc(self) -> str:
        name = f"[{self.name}]" if ":" in self.name else self.name
        return f"{name}:{self.port}" if self.port else name


def parse_host(value: str | None) -> HostName | None:
    """The request's host, or None when the header is absent or not a plain host[:port]."""
    if not value or not _HOST.match(value):
        return None
    parts = urlsplit(f"//{value}")
    try:
        port = parts.port
    except ValueError:
        return None
    return HostName((parts.hostname or "").lower(), port)


def request_host(request: HTTPConnection) -> HostName | None:
    return parse_host(request.headers.get("host"))


def _is_loopback(name: str) -> bool:
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _public_host(settings: Settings) -> tuple[str, HostName] | None:
    """The scheme and host of ``GENTITY_PUBLIC_URL``, when it is set."""
    if not settings.public_url:
        return None
    parts = urlsplit(settings.public_url)
    host = parse_host(parts.netloc)
    return (parts.scheme or "https", host) if host else None


def _base_name(name: str) -> str:
    """The name subdomains hang off: loopback addresses become ``localhost``."""
    return "localhost" if _is_loopback(name) else name


def _loopback_name(settings: Settings) -> str:
    """The loopback name ``gentity serve`` prints when no public URL is set (``127.0.0.1``)."""
    bound = settings.host
    return bound if _is_loopback(bound) else "127.0.0.1"


def _same_host(a: HostName, b: HostName, scheme: str) -> bool:
    default = 443 if scheme == "https" else 80
    return a.name == b.name and (a.port or default) == (b.port or default)


def canonical_url(request: Request, settings: Settings) -> str | None:
    """Where a main-host page request belongs when it came in under another name of this
    server, or None when it is already there (or on an instance's subdomain).

    Cookies are per host, so one dashboard must have one origin: with ``GENTITY_PUBLIC_URL``
    that is the public URL, whatever name reached us; without it, only the loopback names are
    aliases (``localhost`` and ``127.0.0.1`` are the same server), and the one ``gentity
    serve`` prints wins. The scheme is not compared: behind a TLS proxy the request is http.
    """
    host = request_host(request)
    if host is None or instance_subdomain(request, settings) is not None:
        return None
    public = _public_host(settings)
    if public:
        scheme, canonical = public
        if _same_host(host, canonical, scheme):
            return None
        origin = f"{scheme}://{canonical.netloc}"
    else:
        name = _loopback_name(settings)
        if not _is_loopback(host.name) or host.name == name:
            return None
        origin = f"{request.url.scheme}://{HostName(name, host.port).netloc}"
    query = f"?{request.url.query}" if request.url.query else ""
    return f"{origin}{request.url.path}{query}"


def instance_subdomain(request: HTTPConnection, settings: Settings) -> str | None:
    """The instance subdomain this request was addressed to, or None on the main host."""
    host = request_host(request)
    if host is None:
        return None
    bases = {"localhost"}
    public = _public_host(settings)
    if public:
        bases.add(_base_name(public[1].name))
    for base in bases:
        suffix = "." + base
        if host.name.endswith(suffix):
            label = host.name[: -len(suffix)]
            return label if _LABEL.match(label) else None
    return None


def main_origin(request: HTTPConnection, settings: Settings) -> str:
    """Where the dashboard lives, seen from a request on an instance subdomain."""
    host = request_host(request)
    public = _public_host(settings)
    if public and host and host.name.endswith("." + _base_name(public[1].name)):
        scheme, public_host = public
        return f"{scheme}://{public_host.netloc}"
    if host is None:
        return ""
    _, _, parent = host.name.partition(".")
    # ``<sub>.localhost`` hangs off the loopback address the dashboard is known by.
    name = _loopback_name(settings) if parent == "localhost" and not public else parent
    return f"{request.url.scheme}://{HostName(name, host.port).netloc}"


def subdomain_origin(request: HTTPConnection, settings: Settings, subdomain: str) -> str | None:
    """The origin of an instance's full-screen terminal, or None when no such host can exist.

    A bare IP address other than loopback has no subdomains; the operator then needs
    ``GENTITY_PUBLIC_URL`` with a real host name.
    """
    public = _public_host(settings)
    if public:
        scheme, host = public
    else:
        found = request_host(request)
        if found is None:
            return None
        scheme, host = request.url.scheme, found
    if _is_ip(host.name) and not _is_loopback(host.name):
        return None
    base = HostName(f"{subdomain}.{_base_name(host.name)}", host.port)
    return f"{scheme}://{base.netloc}"


def websocket_sources(request: Request) -> str:
    """CSP ``connect-src`` entries for this host's WebSocket (older browsers need them named)."""
    host = request_host(request)
    if host is None:
        return ""
    return f"ws://{host.netloc} wss://{host.netloc}"


# ``<port>-<subdomain>``: a port in canonical form (no leading zero), then a subdomain. Handed
# out subdomains start with the agent's letters, so the two never read alike.
_PREVIEW = re.compile(r"^([1-9][0-9]{0,4})-(.+)$")


def preview_label(label: str | None) -> tuple[int, str] | None:
    """``(port, subdomain)`` of a preview host's first label (``3000-cl-x7k2m9``), or None."""
    found = _PREVIEW.match(label or "")
    if found is None or not _LABEL.match(found[2]) or int(found[1]) > 65535:
        return None
    return int(found[1]), found[2]


def preview_origin(
    request: HTTPConnection, settings: Settings, subdomain: str, port: int
) -> str | None:
    """The origin of an instance's preview of ``port``, or None when no such host can exist
    (the server is reached by an IP address)."""
    return subdomain_origin(request, settings, f"{port}-{subdomain}")
