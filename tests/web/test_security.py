"""What a hostile page can and cannot do to a signed-in dashboard user."""

from __future__ import annotations

import httpx
import pytest
from playwright.sync_api import Route, expect

from tests.conftest import LiveServer
from tests.web.conftest import Browsing
from tests.web.helpers import create_shell_instance, set_up_admin

EVIL = "http://evil.test"


@pytest.mark.timeout(180)
def test_cross_site_form_posts_are_refused_and_change_nothing(
    browsing: Browsing, server: LiveServer
) -> None:
    """An attacker's page posts forms to the dashboard's API with the victim's browser.

    ``text/plain`` forms can smuggle a JSON body; the server refuses any cookie request from
    another origin before it does anything (and SameSite=Lax keeps the cookie home anyway).
    """
    victim = browsing.page()
    set_up_admin(victim)
    instance_id = create_shell_instance(victim)
    api = f"{server.url}/api"

    def evil_page(route: Route) -> None:
        forms = {
            "mint": (f"{api}/tokens", '{"name":"pwned","x":"', '"}'),
            "stop": (f"{api}/instances/{instance_id}/action", '{"action":"stop","x":"', '"}'),
            "logout": (f"{api}/auth/logout", "a", "b"),
        }
        html = "".join(
            f'<form id="{key}" method="post" action="{action}" enctype="text/plain">'
            f"<input name='{name}' value='{value}'><button>{key}</button></form>"
            for key, (action, name, value) in forms.items()
        )
        route.fulfill(content_type="text/html", body=f"<!doctype html><body>{html}</body>")

    attacker = victim.context.new_page()
    attacker.route(f"{EVIL}/**", evil_page)
    for form in ("mint", "stop", "logout"):
        attacker.goto(f"{EVIL}/")
        with attacker.expect_response(lambda r: r.url.startswith(api)) as answer:
            attacker.get_by_role("button", name=form).click()
        assert answer.value.status == 403, form
        assert answer.value.json() == {"error": "Cross-origin request refused"}

    # Nothing changed: no token, the instance still runs, and the victim is still signed in.
    victim.goto("/dashboard/settings/tokens")
    expect(victim.locator("[data-tokens-empty]")).to_be_visible()
    victim.goto(f"/dashboard/instances/{instance_id}")
    expect(victim.locator(".page-head [data-field=status]")).to_have_text("Running")


def test_pages_send_security_headers_and_html_errors(server: LiveServer) -> None:
    """No browser needed: headers, redirects, and which 404s are pages and which are JSON."""
    with httpx.Client(base_url=server.url) as client:
        setup = client.get("/setup")
        assert setup.status_code == 200
        csp = setup.headers["content-security-policy"]
        assert "script-src 'self';" in csp and "'unsafe-inline'" not in csp
        assert "frame-ancestors 'none'" in csp and "object-src 'none'" in csp
        assert setup.headers["x-frame-options"] == "DENY"
        assert setup.headers["referrer-policy"] == "same-origin"
        assert "<script>" not in setup.text  # every script comes from /static
        assert client.get("/").headers["location"] == "/setup"
        assert client.post(
            "/api/auth/signup", json={"email": "a@example.com", "password": "long enough pw"}
        ).is_success
        # Signed in: the root goes to the dashboard; an unknown page is an HTML 404.
        assert client.get("/").headers["location"] == "/dashboard"
        missing = client.get("/dashboard/no/such/page")
        assert missing.status_code == 404
        assert missing.headers["content-type"].startswith("text/html")
        assert "x-frame-options" in missing.headers
        # The API keeps its JSON errors, even under paths the pages use.
        for path in ("/api/nope", "/nope", "/static/nope.js"):
            answer = client.get(path)
            assert answer.status_code == 404
            assert answer.json() == {"error": "Not Found"}
        # The sign-in page never redirects off-site after sign-in.
        for evil in ("//evil.test/x", "https://evil.test/", "/\\evil.test"):
            assert client.get("/login", params={"next": evil}).headers["location"] == "/dashboard"
    with httpx.Client(base_url=server.url) as anonymous:
        assert anonymous.get("/dashboard").headers["location"] == "/login?next=/dashboard"
        static = anonymous.get("/static/vendor/xterm/xterm.js")
        assert static.status_code == 200 and "javascript" in static.headers["content-type"]
