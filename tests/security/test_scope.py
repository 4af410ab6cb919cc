"""A session opened on an instance's subdomain reaches that instance's terminal and nothing
else: not another instance (by handoff, page or terminal), no main-host page, no other API."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from websockets.exceptions import InvalidStatus

from tests.conftest import LiveServer
from tests.server.terminal_client import Terminal, ws_url

SHELL = {"agentType": "shell", "modelProvider": "none", "modelName": "bash"}


@pytest.fixture
def two_instances(admin: httpx.Client) -> Iterator[tuple[dict[str, str], dict[str, str]]]:
    """Two running shell instances of the admin (signed in by cookie)."""
    made = []
    for _ in range(2):
        created = admin.post("/api/instances", json=SHELL, timeout=120)
        assert created.status_code == 200, created.text
        made.append(created.json())
    yield made[0], made[1]
    for instance in made:
        admin.delete(f"/api/instances/{instance['id']}", timeout=60)


def _host(server: LiveServer, subdomain: str) -> str:
    return f"{subdomain}.localhost:{server.port}"


def scoped_cookie(server: LiveServer, dashboard: httpx.Client, subdomain: str) -> str:
    """The session cookie a browser gets on ``subdomain``'s host through the handoff."""
    answer = dashboard.get(f"/dashboard/open/{subdomain}")
    assert answer.status_code == 303, answer.text
    code = parse_qs(urlsplit(answer.headers["location"]).query)["handoff"][0]
    with httpx.Client(base_url=server.url) as fresh:
        redeemed = fresh.get(
            "/", params={"handoff": code}, headers={"Host": _host(server, subdomain)}
        )
    assert redeemed.status_code == 303
    cookie: str = redeemed.cookies["gentity_session"]
    return cookie


def test_a_scoped_session_cannot_hand_off_to_another_instance(
    server: LiveServer,
    admin: httpx.Client,
    two_instances: tuple[dict[str, str], dict[str, str]],
) -> None:
    mine, other = two_instances
    cookie = scoped_cookie(server, admin, mine["subdomain"])
    with httpx.Client(base_url=server.url, cookies={"gentity_session": cookie}) as replayed:
        # The subdomain's cookie, sent to the main host by hand, signs nobody in there.
        for target in (other["subdomain"], mine["subdomain"]):
            answer = replayed.get(f"/dashboard/open/{target}")
            assert "handoff=" not in answer.headers.get("location", "")
            assert answer.status_code == 303
            assert answer.headers["location"].startswith("/login")


def test_a_scoped_session_gets_no_main_host_page(
    server: LiveServer,
    admin: httpx.Client,
    two_instances: tuple[dict[str, str], dict[str, str]],
) -> None:
    mine, other = two_instances
    cookie = scoped_cookie(server, admin, mine["subdomain"])
    with httpx.Client(base_url=server.url, cookies={"gentity_session": cookie}) as replayed:
        for page in (
            "/dashboard",
            "/dashboard/new",
            "/dashboard/settings/tokens",
            f"/dashboard/instances/{mine['id']}",
            f"/dashboard/instances/{other['id']}",
            "/dashboard/nowhere",
        ):
            answer = replayed.get(page)
            assert answer.status_code in (303, 404), page
            assert "admin@example.com" not in answer.text, page
            if answer.status_code == 303:
                assert answer.headers["location"].startswith("/login"), page
        # Nor any API call outside its instance (its own instance's details are fine).
        assert replayed.get(f"/api/instances/{mine['id']}").status_code == 200
        for method, path in (
            ("GET", "/api/instances"),
            ("GET", f"/api/instances/{other['id']}"),
            ("GET", "/api/auth/me"),
            ("GET", "/api/auth/sessions"),
            ("GET", "/api/tokens"),
        ):
            assert replayed.request(method, path).status_code == 401, path


def test_a_scoped_session_gets_no_other_instances_terminal(
    server: LiveServer,
    admin: httpx.Client,
    two_instances: tuple[dict[str, str], dict[str, str]],
) -> None:
    mine, other = two_instances
    cookie = scoped_cookie(server, admin, mine["subdomain"])
    other_host = _host(server, other["subdomain"])
    with httpx.Client(base_url=server.url, cookies={"gentity_session": cookie}) as replayed:
        # Its own subdomain shows its own terminal page...
        own = replayed.get("/", headers={"Host": _host(server, mine["subdomain"])})
        assert own.status_code == 200 and f'data-instance-id="{mine["id"]}"' in own.text
        # ...another instance's subdomain does not take the cookie: it sends the browser to
        # the main host to sign in and hand over, as for a visitor with no session at all.
        page = replayed.get("/", headers={"Host": other_host})
        assert page.status_code == 303
        assert page.headers["location"].endswith(f"/dashboard/open/{other['subdomain']}")
        assert other["id"] not in page.text

    async def terminals() -> None:
        term = await Terminal.open(
            ws_url(server.url, mine["id"]),
            additional_headers={"Cookie": f"gentity_session={cookie}"},
            origin=server.url,
        )
        await term.send("echo scoped-$((4+4))\r")
        await term.expect("scoped-8")
        await term.close()
        with pytest.raises(InvalidStatus) as refused:
            await Terminal.open(
                ws_url(server.url, other["id"]),
                additional_headers={"Cookie": f"gentity_session={cookie}"},
                origin=server.url,
            )
        assert refused.value.response.status_code == 404

    asyncio.run(terminals())
