"""The preview host's rules that need no instance: which hosts are previews, which cookies are
Gentity's, what a ``Set-Cookie`` from an instance may keep, where a hand-off may lead."""

from __future__ import annotations

import pytest
from starlette.requests import Request

from gentity.server.web.hosts import instance_subdomain, main_origin, preview_label
from gentity.server.web.preview import clean_set_cookie, is_gentity_cookie, safe_path
from gentity.settings import Settings


def _request(host: str) -> Request:
    return Request(
        {
            "type": "http",
            "method": "GET",
            "scheme": "http",
            "path": "/",
            "query_string": b"",
            "headers": [(b"host", host.encode())],
        }
    )


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("3000-cl-x7k2m9.localhost:8080", (3000, "cl-x7k2m9")),
        ("1-sh-abc123.localhost", (1, "sh-abc123")),
        ("65535-sh-abc123.gentity.example.com", (65535, "sh-abc123")),
        ("65536-sh-abc123.localhost:8080", None),
        ("03000-sh-abc123.localhost:8080", None),  # one spelling per port: one origin
        ("0-sh-abc123.localhost:8080", None),
        ("3000-.localhost:8080", None),
        ("sh-abc123.localhost:8080", None),  # the full-screen terminal's host
        ("3000-sh-abc123.evil.com", None),
        ("localhost:8080", None),
    ],
)
def test_which_hosts_are_previews(host: str, expected: tuple[int, str] | None) -> None:
    settings = Settings(public_url="https://gentity.example.com")
    assert preview_label(instance_subdomain(_request(host), settings)) == expected


def test_a_preview_host_knows_where_the_dashboard_is() -> None:
    assert main_origin(_request("3000-sh-abc123.localhost:8080"), Settings()) == (
        "http://127.0.0.1:8080"
    )


@pytest.mark.parametrize(
    ("name", "ours"),
    [
        ("gentity_session", True),
        ("__Host-gentity_session", True),
        ("__Secure-gentity_preview", True),
        ("Gentity_Preview", True),
        (" gentity_x", True),
        ("session", False),
        ("my_gentity_session", False),
    ],
)
def test_gentity_cookie_names(name: str, ours: bool) -> None:
    assert is_gentity_cookie(name) is ours


@pytest.mark.parametrize(
    ("header", "kept"),
    [
        (b"a=1; Path=/", b"a=1; Path=/"),
        (b"a=1; Domain=localhost; Path=/; HttpOnly", b"a=1; Path=/; HttpOnly"),
        (b"a=1; domain=.example.com", b"a=1"),
        (b"a=1;DOMAIN = example.com ;Secure", b"a=1; Secure"),
        (b"gentity_session=planted; Path=/", None),
        (b"__Host-gentity_session=x; Path=/; Secure", None),
        (b"", None),
    ],
)
def test_set_cookie_from_an_instance_stays_on_its_host(header: bytes, kept: bytes | None) -> None:
    assert clean_set_cookie(header) == kept


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, "/"),
        ("/app?x=1", "/app?x=1"),
        ("//evil.com/", "/"),
        ("https://evil.com/", "/"),
        ("/\\evil.com", "/"),
        ("/a\nb", "/"),
    ],
)
def test_the_hand_off_goes_on_to_a_path_of_the_preview_host_only(
    value: str | None, expected: str
) -> None:
    assert safe_path(value) == expected
