"""The dashboard end to end, in a real Chromium: from the first visit to signing out."""

from __future__ import annotations

import re

import httpx
import pytest
from playwright.sync_api import Page, Route, WebSocketRoute, expect

from tests.conftest import PASSWORD, LiveServer
from tests.web.conftest import PHONE, Browsing, screenshot
from tests.web.helpers import ADMIN, assert_header_and_content_line_up, run_in_terminal

STATUS = ".page-head [data-field=status]"
TERMINAL_STATE = "[data-terminal-state]"
TERMINAL_ROWS = "[data-terminal-screen] .xterm-rows"


def _set_up_with_a_mistake(page: Page) -> None:
    """First run: a mismatched password is reported next to the field and nothing is lost."""
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/setup$"))
    screenshot(page, "01-setup")
    page.get_by_label("Email").fill(ADMIN)
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_label("Password again").fill(PASSWORD + "x")
    page.get_by_role("button", name="Create account").click()
    expect(page.locator(".field-error")).to_have_text("The two passwords do not match.")
    expect(page.get_by_label("Email")).to_have_value(ADMIN)
    screenshot(page, "02-setup-error")
    page.get_by_label("Password again").fill(PASSWORD)
    page.get_by_role("button", name="Create account").click()
    expect(page).to_have_url(re.compile(r"/dashboard$"))
    expect(page.locator("[data-empty]")).to_be_visible()
    screenshot(page, "03-dashboard-empty")


def _sign_out_and_back_in(page: Page) -> None:
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(re.compile(r"/login$"))
    page.get_by_label("Email").fill(ADMIN)
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("[data-error]")).to_have_text("Invalid email or password")
    expect(page.get_by_label("Email")).to_have_value(ADMIN)
    screenshot(page, "04-login-error")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(re.compile(r"/dashboard$"))


def _create_instance(page: Page) -> str:
    # An empty list has one "new" button: the empty state's.
    expect(page.get_by_role("link", name="New instance")).to_be_hidden()
    page.get_by_role("link", name="Create your first instance").click()
    expect(page.get_by_label("Claude Code", exact=True)).to_be_visible()
    page.get_by_label("Claude Code", exact=True).check()
    expect(page.get_by_label("API key")).to_be_visible()
    expect(page.get_by_label("API key")).to_have_attribute("type", "password")
    screenshot(page, "05-new-instance-claude")
    # Without a key the form says so next to the field, and keeps what was typed.
    page.get_by_label("Name").fill("my shell")
    page.get_by_role("button", name="Create instance").click()
    expect(page.locator(".field-error")).to_contain_text("needs an API key")
    expect(page.get_by_label("Name")).to_have_value("my shell")
    page.get_by_label("Shell", exact=True).check()
    expect(page.get_by_label("API key")).to_be_hidden()
    expect(page.get_by_label("Model")).to_have_value("none/bash")
    expect(page.get_by_label("Model").locator("option")).to_have_text(["Bash login shell"])
    page.get_by_role("button", name="Create instance").click()
    expect(page.locator("[data-progress]")).to_be_visible()
    screenshot(page, "06-new-instance-creating")
    expect(page).to_have_url(re.compile(r"/dashboard/instances/c\w+$"), timeout=120_000)
    return page.url.rsplit("/", 1)[1]


def _terminal_and_logs(page: Page) -> None:
    expect(page.locator(STATUS)).to_have_text("Running")
    expect(page.locator(".details [data-field=agent]")).to_have_text("Shell")
    expect(page.locator(".details [data-field=model]")).to_have_text("Bash login shell")
    expect(page.locator(TERMINAL_STATE)).to_have_text("Connected", timeout=30_000)
    run_in_terminal(page, "echo hello-$((6*7))")
    expect(page.locator(TERMINAL_ROWS)).to_contain_text("hello-42", timeout=15_000)
    # The agent's output goes to its log, which the page follows.
    expect(page.locator("[data-logs]")).to_contain_text("hello-42", timeout=15_000)
    screenshot(page, "07-instance")
    assert_header_and_content_line_up(page)


def _reconnects(page: Page, sockets: list[WebSocketRoute]) -> None:
    """A dropped socket comes back with the server's replay; so does the agent after exit."""
    connections = len(sockets)
    sockets[-1].close(code=4000, reason="test drops the connection")
    expect(page.locator(TERMINAL_STATE)).to_contain_text("Reconnecting")
    expect(page.locator(TERMINAL_STATE)).to_have_text("Connected", timeout=30_000)
    assert len(sockets) == connections + 1
    # The screen was reset and refilled from the replay: the earlier output is there once.
    try:
        expect(page.locator(TERMINAL_ROWS)).to_contain_text("hello-42")
    except AssertionError as failed:
        # Say what the agent did meanwhile: a fresh session would replay only its prompt.
        instance_id = page.url.rsplit("/", 1)[1]
        agent = page.request.get(f"/api/instances/{instance_id}").json().get("agent")
        logs = page.locator("[data-logs]").inner_text().splitlines()[-30:]
        raise AssertionError(f"{failed}\nagent: {agent}\nlog tail:\n" + "\n".join(logs)) from None
    assert page.locator(TERMINAL_ROWS).inner_text().count("hello-42") == 1
    # The shell exits; the server restarts the agent and the terminal reconnects to it.
    run_in_terminal(page, "exit")
    expect(page.locator(TERMINAL_STATE)).to_contain_text("exited")
    expect(page.locator(TERMINAL_STATE)).to_have_text("Connected", timeout=30_000)
    run_in_terminal(page, "echo back-$((5*5))")
    expect(page.locator(TERMINAL_ROWS)).to_contain_text("back-25", timeout=15_000)


def _stop_and_start(page: Page) -> None:
    page.get_by_role("button", name="Stop", exact=True).click()
    page.get_by_role("dialog").get_by_role("button", name="Stop instance").click()
    expect(page.locator(STATUS)).to_have_text("Stopped", timeout=60_000)
    expect(page.locator(TERMINAL_STATE)).to_contain_text("stopped")
    expect(page.get_by_role("button", name="Start", exact=True)).to_be_enabled()
    expect(page.get_by_role("button", name="Stop", exact=True)).to_be_disabled()
    screenshot(page, "08-instance-stopped")
    # The full-screen page of a stopped instance says so, and offers the way to start it.
    with page.context.expect_page() as opened:
        page.get_by_role("link", name="Open full screen").click()
    full = opened.value
    expect(full.locator("[data-field=status]")).to_have_text("Stopped")
    full.get_by_role("link", name="Start in the dashboard").click()
    expect(full).to_have_url(page.url)
    expect(full.get_by_role("button", name="Start", exact=True)).to_be_enabled()
    full.close()
    page.get_by_role("button", name="Start", exact=True).click()
    expect(page.locator(STATUS)).to_have_text("Running", timeout=60_000)
    # The terminal comes back by itself, and works.
    expect(page.locator(TERMINAL_STATE)).to_have_text("Connected", timeout=30_000)
    run_in_terminal(page, "echo again-$((7*7))")
    expect(page.locator(TERMINAL_ROWS)).to_contain_text("again-49", timeout=15_000)


def _restart(page: Page) -> None:
    """A restart asked for here reads as one: a Restarting badge, no "process exited" report."""
    held: list[Route] = []
    page.route(re.compile(r"/action$"), lambda route: held.append(route))
    page.get_by_role("button", name="Restart", exact=True).click()
    page.get_by_role("dialog").get_by_role("button", name="Restart instance").click()
    # The server has not answered yet (the test holds the request); polls meanwhile do not
    # put "Running" back on the badge.
    for _ in range(100):
        if held:
            break
        page.wait_for_timeout(50)
    expect(page.locator(STATUS)).to_have_text("Restarting")
    page.wait_for_timeout(3500)
    expect(page.locator(STATUS)).to_have_text("Restarting")
    held[0].continue_()
    page.unroute(re.compile(r"/action$"))
    expect(page.locator(TERMINAL_ROWS)).to_contain_text(
        "restarted: a fresh session", timeout=60_000
    )
    expect(page.locator(TERMINAL_ROWS)).not_to_contain_text("exited with")
    expect(page.locator(TERMINAL_STATE)).to_have_text("Connected", timeout=30_000)
    expect(page.locator(STATUS)).to_have_text("Running")
    screenshot(page, "08b-instance-restarted")


def _tokens(page: Page, server: LiveServer) -> None:
    page.get_by_role("link", name="API tokens").click()
    expect(page).to_have_url(re.compile(r"/dashboard/settings/tokens$"))
    page.get_by_label("Name").fill("laptop")
    page.get_by_role("button", name="Create token").click()
    secret = page.locator("[data-secret-value]")
    expect(secret).to_have_value(re.compile(r"^gn_live_\w{28}$"))
    plaintext = secret.input_value()
    expect(page.locator("[data-secret]")).to_contain_text("shown only this once")
    expect(page.locator("[data-tokens]")).to_contain_text("laptop")
    screenshot(page, "09-token-minted")
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {plaintext}"}) as c:
        assert c.get("/api/tokens").status_code == 200
    # Nowhere to be found afterwards: not on the page, not in the browser's storage.
    page.get_by_role("button", name="Done").click()
    expect(page.locator("[data-secret]")).to_be_hidden()
    page.reload()
    expect(page.locator("[data-tokens]")).to_contain_text(plaintext[:16])
    assert plaintext not in page.content()
    stored = page.evaluate(
        "() => JSON.stringify([Object.entries(localStorage), Object.entries(sessionStorage)])"
    )
    assert plaintext not in stored
    screenshot(page, "10-tokens")
    page.get_by_role("button", name="Revoke laptop").click()
    dialog = page.locator("#confirm-dialog")
    expect(dialog).to_be_visible()
    dialog.get_by_role("button", name="Revoke token").click()
    expect(page.locator("[data-tokens-empty]")).to_be_visible()
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {plaintext}"}) as c:
        assert c.get("/api/tokens").status_code == 401


def _delete_from_list(page: Page) -> None:
    page.get_by_role("link", name="Instances").click()
    row = page.locator("[data-instance]")
    expect(row).to_have_count(1)
    expect(row.locator(".status")).to_have_text("Running")
    row.locator("summary").click()
    row.get_by_role("button", name="Delete").click()
    dialog = page.locator("#confirm-dialog")
    expect(dialog).to_be_visible()
    screenshot(page, "12-delete-dialog", full_page=False)
    # Escape cancels, and nothing happens.
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    expect(row).to_have_count(1)
    # Another tab has the instance open while it is deleted here.
    other = page.context.new_page()
    other.goto(row.get_by_role("link").first.get_attribute("href") or "")
    expect(other.locator(STATUS)).to_have_text("Running")
    # Not following its log: a followed log keeps the volume busy and holds up the delete
    # (a server-side matter, tracked separately from the page's).
    other.get_by_label("Follow").uncheck()
    row.locator("summary").click()
    row.get_by_role("button", name="Delete").click()
    dialog.get_by_role("button", name="Delete instance").click()
    expect(row).to_have_count(0, timeout=60_000)
    expect(page.locator("[data-empty]")).to_be_visible()
    # That tab says it is gone, with a badge to match and nothing left to press.
    expect(other.locator("[data-refresh-error]")).to_have_text("This instance no longer exists.")
    expect(other.locator(STATUS)).to_have_text("Deleted")
    expect(other.get_by_role("button", name="Stop", exact=True)).to_be_disabled()
    other.close()


@pytest.mark.timeout(420)
def test_dashboard_end_to_end(browsing: Browsing, server: LiveServer) -> None:
    page = browsing.page()
    # Pass the terminal's WebSocket through a proxy the test can cut.
    sockets: list[WebSocketRoute] = []

    def proxy(socket: WebSocketRoute) -> None:
        socket.connect_to_server()
        sockets.append(socket)

    page.route_web_socket(re.compile(r"/terminal"), proxy)
    _set_up_with_a_mistake(page)
    _sign_out_and_back_in(page)
    instance_id = _create_instance(page)
    _terminal_and_logs(page)
    _reconnects(page, sockets)
    _stop_and_start(page)
    _restart(page)

    page.goto("/dashboard")
    expect(page.locator("[data-instance] .status")).to_have_text("Running")
    screenshot(page, "11-dashboard")
    phone = browsing.context(PHONE, signed_in_as=page)
    small = phone.new_page()
    for path, name in (
        ("/dashboard", "phone-dashboard"),
        (f"/dashboard/instances/{instance_id}", "phone-instance"),
        ("/dashboard/new", "phone-new-instance"),
        ("/dashboard/settings/tokens", "phone-tokens"),
    ):
        small.goto(path)
        small.wait_for_load_state("networkidle")
        if "instances/" in path:
            expect(small.locator(TERMINAL_STATE)).to_have_text("Connected", timeout=30_000)
            # A log line's message gets the width, not its time and level.
            message = small.locator("[data-logs] .log__message").first.bounding_box()
            logs = small.locator("[data-logs]").bounding_box()
            assert message and logs and message["width"] > 0.85 * logs["width"], (message, logs)
        assert_header_and_content_line_up(small)
        assert small.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1"), (
            f"{path} scrolls sideways on a phone"
        )
        screenshot(small, name)
    small.close()

    _tokens(page, server)
    _delete_from_list(page)

    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(re.compile(r"/login$"))
    page.goto("/dashboard")
    expect(page).to_have_url(re.compile(r"/login\?next=/dashboard$"))
    screenshot(page, "13-signed-out")
