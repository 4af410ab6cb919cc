"""One canonical origin for the dashboard: other names of this server redirect to it."""

from __future__ import annotations

import pytest
from starlette.requests import Request

from gentity.server.web.hosts import canonical_url, main_origin
from gentity.settings import Settings


def _request(host: str, path: str = "/login", query: str = "", scheme: str = "http") -> Request:
    return Request(
        {
            "type": "http",
            "method": "GET",
            "scheme": scheme,
            "path": path,
            "query_string": query.encode(),
            "headers": [(b"host", host.encode())],
            "server": ("127.0.0.1", 8080),
        }
    )


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("127.0.0.1:8080", None),
        ("localhost:8080", "http://127.0.0.1:8080/login?next=/dashboard"),
        ("[::1]:8080", "http://127.0.0.1:8080/login?next=/dashboard"),
        # Not a loopback alias: without a public URL nobody can tell it is this server.
        ("gentity.lan:8080", None),
        ("10.0.0.5:8080", None),
        # Subdomains keep their own pages.
        ("sh-abc123.localhost:8080", None),
    ],
)
def test_without_a_public_url_loopback_names_go_to_the_printed_one(
    host: str, expected: str | None
) -> None:
    assert canonical_url(_request(host, query="next=/dashboard"), Settings()) == expected


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("gentity.example.com", None),
        ("gentity.example.com:443", None),
        ("localhost:8080", "https://gentity.example.com/dashboard"),
        ("127.0.0.1:8080", "https://gentity.example.com/dashboard"),
        ("10.0.0.5", "https://gentity.example.com/dashboard"),
        ("sh-abc123.gentity.example.com", None),
        ("sh-abc123.localhost:8080", None),
    ],
)
def test_with_a_public_url_every_other_name_goes_there(host: str, expected: str | None) -> None:
    settings = Settings(public_url="https://gentity.example.com")
    assert canonical_url(_request(host, path="/dashboard"), settings) == expected


def test_a_subdomain_sends_visitors_to_the_canonical_main_host() -> None:
    request = _request("sh-abc123.localhost:8080", path="/")
    assert main_origin(request, Settings()) == "http://127.0.0.1:8080"
    assert main_origin(request, Settings(host="localhost")) == "http://localhost:8080"
    public = Settings(public_url="https://gentity.example.com")
    assert main_origin(_request("sh-abc123.gentity.example.com"), public) == (
        "https://gentity.example.com"
    )
