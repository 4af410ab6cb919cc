"""The instance page's ports: a server started in the terminal shows up with its preview link,
which opens for the owner (signed in on the preview host by hand-off); a stranger is sent to
sign in until the owner makes the port public."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.conftest import LiveServer
from tests.web.conftest import Browsing
from tests.web.helpers import create_shell_instance, run_in_terminal, set_up_admin

PAGE = "<!doctype html><title>Preview</title><link rel=icon href=data:,><h1>hello-preview</h1>"


@pytest.mark.timeout(300)
def test_ports_panel_links_to_previews(browsing: Browsing, server: LiveServer) -> None:
    owner = browsing.page()
    set_up_admin(owner)
    create_shell_instance(owner)
    subdomain = owner.locator("[data-field=subdomainLink]").inner_text()
    expect(owner.locator("[data-terminal-state]")).to_have_text("Connected", timeout=30_000)
    expect(owner.locator("[data-ports-empty]")).to_contain_text("Nothing listens", timeout=15_000)

    run_in_terminal(
        owner,
        f"mkdir -p ~/site && printf '{PAGE}' > ~/site/index.html"
        " && (python3 -m http.server 8000 -d ~/site >/dev/null 2>&1 &)",
    )
    row = owner.locator("[data-port='8000']")
    expect(row).to_be_visible(timeout=30_000)
    url = f"http://8000-{subdomain}.localhost:{server.port}/"
    link = row.get_by_role("link")
    expect(link).to_have_text(url)
    expect(owner.locator("[data-ports-empty]")).to_be_hidden()

    # The owner's click goes through the dashboard's hand-off and lands on the preview.
    with owner.context.expect_page() as opened:
        link.click()
    preview = opened.value
    expect(preview).to_have_url(url)
    expect(preview.locator("h1")).to_have_text("hello-preview")

    # Someone without a session is sent to sign in on the main host.
    stranger = browsing.page()
    stranger.goto(url)
    expect(stranger).to_have_url(re.compile(r"/login\?next=/dashboard/preview/"))

    # Made public, the preview opens for anyone.
    public = row.get_by_label("Public")
    with owner.expect_response(lambda r: r.request.method == "PUT" and "/ports/8000" in r.url):
        public.check()
    expect(owner.locator("[data-port='8000']").get_by_label("Public")).to_be_checked()
    stranger.goto(url)
    expect(stranger).to_have_url(url)
    expect(stranger.locator("h1")).to_have_text("hello-preview")
