"""The subdomain handoff over plain HTTP: single-use, short-lived, bound to host and session.

No browser here: ``Host`` headers stand in for ``<sub>.localhost`` and cookies are carried by
hand, so each refusal can be checked on its own.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from gentity.server.db.ids import utcnow
from gentity.server.web import handoff
from tests.conftest import PASSWORD, LiveServer


@pytest.fixture
def owner(admin: httpx.Client) -> Iterator[tuple[httpx.Client, dict[str, str]]]:
    """The admin, signed in by cookie, with a running shell instance."""
    created = admin.post(
        "/api/instances",
        json={"agentType": "shell", "modelProvider": "none", "modelName": "bash"},
        timeout=120,
    )
    assert created.status_code == 200, created.text
    yield admin, created.json()
    admin.delete(f"/api/instances/{created.json()['id']}", timeout=60)


def _sub_host(server: LiveServer, subdomain: str) -> str:
    return f"{subdomain}.localhost:{server.port}"


def _mint(client: httpx.Client, subdomain: str) -> str:
    answer = client.get(f"/dashboard/open/{subdomain}")
    assert answer.status_code == 303, answer.text
    assert answer.headers["referrer-policy"] == "no-referrer"
    code: str = parse_qs(urlsplit(answer.headers["location"]).query)["handoff"][0]
    return code


def _redeem(server: LiveServer, host: str, code: str) -> httpx.Response:
    with httpx.Client(base_url=server.url) as fresh:
        return fresh.get("/", params={"handoff": code}, headers={"Host": host})


def test_a_code_opens_one_session_on_its_own_subdomain_once(
    server: LiveServer, owner: tuple[httpx.Client, dict[str, str]]
) -> None:
    client, instance = owner
    sub = instance["subdomain"]
    answer = client.get(f"/dashboard/open/{sub}")
    assert answer.headers["location"].startswith(f"http://{_sub_host(server, sub)}/?handoff=")
    code = parse_qs(urlsplit(answer.headers["location"]).query)["handoff"][0]

    # Another subdomain's host does not take it (and that does not use it up).
    assert _redeem(server, _sub_host(server, "sh-zzzzzz"), code).status_code == 403
    redeemed = _redeem(server, _sub_host(server, sub), code)
    assert redeemed.status_code == 303 and redeemed.headers["location"] == "/"
    cookie = redeemed.cookies["gentity_session"]
    assert "httponly" in redeemed.headers["set-cookie"].lower()
    assert "domain=" not in redeemed.headers["set-cookie"].lower()
    # Used once: a second try is refused, with a page that says what to do.
    again = _redeem(server, _sub_host(server, sub), code)
    assert again.status_code == 403 and "expired" in again.text

    with httpx.Client(base_url=server.url, cookies={"gentity_session": cookie}) as sub_client:
        page = sub_client.get("/", headers={"Host": _sub_host(server, sub)})
        assert page.status_code == 200
        assert f'data-instance-id="{instance["id"]}"' in page.text
        assert (
            "'unsafe-inline'"
            not in page.headers["content-security-policy"].split("script-src")[1].split(";")[0]
        )
        # Dashboard pages are not served on a subdomain: they live on the main host.
        moved = sub_client.get("/dashboard", headers={"Host": _sub_host(server, sub)})
        assert moved.status_code == 303
        assert moved.headers["location"] == f"http://127.0.0.1:{server.port}/dashboard"


def test_forged_expired_and_orphaned_codes_are_refused(
    server: LiveServer, owner: tuple[httpx.Client, dict[str, str]]
) -> None:
    client, instance = owner
    sub, host = instance["subdomain"], _sub_host(server, instance["subdomain"])
    code = _mint(client, sub)
    flipped = code[:-2] + ("A" if code[-2] != "A" else "B") + code[-1]
    assert _redeem(server, host, flipped).status_code == 403
    assert _redeem(server, host, "not-a-code").status_code == 403

    box = server.app.state.ctx.box
    opened = handoff.open_code(box, code)
    assert opened is not None
    stale = handoff.mint(
        box,
        user_id=opened.user_id,
        instance_id=opened.instance_id,
        subdomain=sub,
        session_id=opened.session_id,
        now=utcnow() - handoff.HANDOFF_TTL - timedelta(seconds=1),
    )
    assert _redeem(server, host, stale).status_code == 403

    # Signing out of the dashboard voids the codes minted by that session.
    assert client.post("/api/auth/logout").status_code == 200
    assert _redeem(server, host, code).status_code == 403


def test_anonymous_and_unknown_subdomains(server: LiveServer, admin: httpx.Client) -> None:
    with httpx.Client(base_url=server.url) as anonymous:
        answer = anonymous.get("/", headers={"Host": f"sh-abcdef.localhost:{server.port}"})
        assert answer.status_code == 303
        assert answer.headers["location"] == (
            f"http://127.0.0.1:{server.port}/dashboard/open/sh-abcdef"
        )
    missing = admin.get("/dashboard/open/sh-abcdef")
    assert missing.status_code == 404 and "text/html" in missing.headers["content-type"]


def test_the_subdomain_session_is_scoped_and_ends_with_the_dashboard_session(
    server: LiveServer, owner: tuple[httpx.Client, dict[str, str]]
) -> None:
    client, instance = owner
    sub = instance["subdomain"]
    host = _sub_host(server, sub)
    redeemed = _redeem(server, host, _mint(client, sub))
    cookie = redeemed.cookies["gentity_session"]
    with httpx.Client(
        base_url=server.url, cookies={"gentity_session": cookie}, headers={"Host": host}
    ) as sub_client:
        # Its own instance, yes; anything else the account could do, no.
        assert sub_client.get(f"/api/instances/{instance['id']}").status_code == 200
        for method, path in (
            ("GET", "/api/tokens"),
            ("GET", "/api/instances"),
            ("GET", f"/api/instances/{instance['id']}/logs"),
            ("POST", "/api/tokens"),
            ("DELETE", f"/api/instances/{instance['id']}"),
        ):
            refused = sub_client.request(method, path, json={"name": "x"})
            assert refused.status_code == 401, path
        # Signing out of the dashboard ends the subdomain's session too.
        assert client.post("/api/auth/logout").status_code == 200
        assert sub_client.get(f"/api/instances/{instance['id']}").status_code == 401
    assert (
        client.post(
            "/api/auth/login", json={"email": "admin@example.com", "password": PASSWORD}
        ).status_code
        == 200
    )
