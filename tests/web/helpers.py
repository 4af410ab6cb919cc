"""Steps the browser tests share: first-run set-up, signing in, creating a shell instance."""

from __future__ import annotations

import re

from playwright.sync_api import Page, expect

from tests.conftest import PASSWORD

ADMIN = "admin@example.com"
# Creating an instance blocks until its machine runs; a shell needs no install, but leave room.
CREATE_TIMEOUT_MS = 120_000


def set_up_admin(page: Page, email: str = ADMIN) -> None:
    """The first visit goes to /setup, which creates the admin and signs in."""
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/setup$"))
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_label("Password again").fill(PASSWORD)
    page.get_by_role("button", name="Create account").click()
    expect(page).to_have_url(re.compile(r"/dashboard$"))


def sign_in(page: Page, email: str, base: str = "") -> None:
    page.goto(f"{base}/login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(re.compile(r"/dashboard$"))


def create_shell_instance(page: Page, name: str = "scratch") -> str:
    """Create a shell instance through /dashboard/new; returns its id."""
    page.goto("/dashboard/new")
    page.get_by_label("Shell", exact=True).check()
    page.get_by_label("Name").fill(name)
    page.get_by_role("button", name="Create instance").click()
    expect(page).to_have_url(re.compile(r"/dashboard/instances/c\w+$"), timeout=CREATE_TIMEOUT_MS)
    return page.url.rsplit("/", 1)[1]


def terminal_screen(page: Page) -> object:
    return page.locator("[data-terminal-screen] .xterm-rows")


def run_in_terminal(page: Page, command: str) -> None:
    """Type a command into the xterm.js terminal, as a user would."""
    page.locator("[data-terminal-screen]").click()
    page.keyboard.type(command)
    page.keyboard.press("Enter")


# The left and right edges of the header's content and of the page's content, padding excluded.
_EDGES = """() => {
  const inner = (node) => {
    const box = node.getBoundingClientRect();
    const style = getComputedStyle(node);
    return [box.left + parseFloat(style.paddingLeft), box.right - parseFloat(style.paddingRight)];
  };
  const header = document.querySelector(".site-header__inner");
  return [inner(header), inner(document.querySelector("main"))];
}"""


def assert_header_and_content_line_up(page: Page) -> None:
    header, content = page.evaluate(_EDGES)
    assert [round(x) for x in header] == [round(x) for x in content], (page.url, header, content)
