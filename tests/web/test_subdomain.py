"""``http://<subdomain>.localhost:<port>/``: the instance's terminal, full screen, for its owner.

The session cookie is host-only, so the owner is handed over from the dashboard with a one-time
code; everyone else gets a 404 page or the sign-in page, and a used code is worthless.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from playwright.sync_api import Request, expect

from tests.conftest import LiveServer
from tests.web.conftest import PHONE, Browsing, screenshot
from tests.web.helpers import create_shell_instance, run_in_terminal, set_up_admin, sign_in


@pytest.mark.timeout(300)
def test_subdomain_terminal_is_for_its_owner_only(
    browsing: Browsing, server: LiveServer, make_user: Callable[[str], None]
) -> None:
    owner = browsing.page()
    set_up_admin(owner)
    create_shell_instance(owner)
    subdomain = owner.locator("[data-field=subdomainLink]").inner_text()
    sub_origin = f"http://{subdomain}.localhost:{server.port}"
    expect(owner.locator("[data-terminal-state]")).to_have_text("Connected", timeout=30_000)

    # Straight to the subdomain, as a bookmark would: the main host is the one the owner
    # signed in on (127.0.0.1, what the server prints), so there is no second sign-in.
    direct = browsing.context(signed_in_as=owner).new_page()
    direct.goto(f"{sub_origin}/")
    expect(direct).to_have_url(f"{sub_origin}/")
    expect(direct.locator("[data-terminal-state]")).to_have_text("Connected", timeout=30_000)
    # And localhost is the same dashboard, under its one name.
    direct.goto(f"http://localhost:{server.port}/dashboard")
    expect(direct).to_have_url(f"{server.url}/dashboard")
    expect(direct.get_by_role("button", name="Sign out")).to_be_visible()
    direct.close()

    # The owner follows "Open full screen": a new tab on the subdomain, signed in by handoff.
    handoffs: list[str] = []

    def note(request: Request) -> None:
        if "handoff=" in request.url:
            handoffs.append(request.url)

    owner.context.on("request", note)
    with owner.context.expect_page() as opened:
        owner.get_by_role("link", name="Open full screen").click()
    full = opened.value
    expect(full).to_have_url(f"{sub_origin}/")
    expect(full.locator("[data-terminal-state]")).to_have_text("Connected", timeout=30_000)
    run_in_terminal(full, "echo full-$((8*8))")
    expect(full.locator("[data-terminal-screen] .xterm-rows")).to_contain_text("full-64")
    # The terminal fills the window, and follows it when it changes size.
    box = full.locator("[data-terminal-screen]").bounding_box()
    assert box is not None and box["height"] > 700
    rows_before = full.evaluate("document.querySelectorAll('.xterm-rows > div').length")
    full.set_viewport_size({"width": 900, "height": 500})
    # Polled from here: wait_for_function evaluates strings in the page, which its CSP forbids.
    for _ in range(100):
        if full.evaluate("document.querySelectorAll('.xterm-rows > div').length") < rows_before:
            break
        full.wait_for_timeout(100)
    else:
        raise AssertionError("the terminal did not shrink with the window")
    # On a phone every control of the top bar is whole: nothing cut off with an ellipsis.
    full.set_viewport_size(PHONE)
    bar = full.locator(".fullscreen__bar")
    for child in bar.locator("> *:visible").all():
        whole = child.evaluate("node => node.scrollWidth <= node.clientWidth + 1")
        assert whole, child.inner_text()
    assert full.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
    screenshot(full, "phone-subdomain-terminal", full_page=False)
    full.set_viewport_size({"width": 1366, "height": 860})
    screenshot(full, "20-subdomain-terminal", full_page=False)
    assert len(handoffs) == 1
    # The subdomain's own session cookie: host-only and out of scripts' reach.
    cookies = [c for c in full.context.cookies(sub_origin) if c["name"] == "gentity_session"]
    assert [(c["domain"], c["httpOnly"]) for c in cookies] == [(f"{subdomain}.localhost", True)]

    # Someone who sees the handoff link afterwards gets nothing from it: it was single-use.
    stranger = browsing.page()
    stranger.goto(handoffs[0])
    expect(stranger.get_by_role("heading", name="This link has expired")).to_be_visible()
    screenshot(stranger, "21-subdomain-handoff-used")

    # Anonymous: sent to sign in on the main host, which then hands over (to owners only).
    anonymous = browsing.page()
    anonymous.goto(f"{sub_origin}/")
    expect(anonymous).to_have_url(f"{server.url}/login?next=/dashboard/open/{subdomain}")

    # Another user, signed in: a 404 page, on the subdomain link and on the handoff route.
    make_user("other@example.com")
    other = browsing.page()
    sign_in(other, "other@example.com", base=f"http://localhost:{server.port}")
    other.goto(f"{sub_origin}/")
    expect(other).to_have_url(re.compile(rf"/dashboard/open/{subdomain}$"))
    expect(other.get_by_role("heading", name="Not found")).to_be_visible()
    screenshot(other, "22-subdomain-not-owner")
    response = other.goto(f"http://localhost:{server.port}/dashboard/open/{subdomain}")
    assert response is not None and response.status == 404
