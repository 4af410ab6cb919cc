"""Browser fixtures: a real Chromium (Debian's, no downloaded browser) driven by Playwright.

The browser suite runs on SQLite only: it tests the pages, and the database layer is covered
by the rest of the suite on both backends. Without Chromium the tests are skipped locally and
fail under CI, where a missing browser would otherwise hide every page test.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Page,
    ViewportSize,
    sync_playwright,
)

from gentity.settings import Settings
from tests.conftest import PASSWORD, LiveServer

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "test-output" / "screenshots"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
LAPTOP: ViewportSize = {"width": 1366, "height": 860}
PHONE: ViewportSize = {"width": 390, "height": 844}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the tests that drive Chromium, so ``-m "not browser"`` can leave them out."""
    for item in items:
        if {"browser", "browsing"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.browser)


def _chromium() -> str | None:
    found = shutil.which("chromium")
    if found:
        return found
    return "/usr/bin/chromium" if os.access("/usr/bin/chromium", os.X_OK) else None


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """Overrides the SQLite/PostgreSQL parametrisation of ``tests/conftest.py``: SQLite only."""
    return f"sqlite:///{tmp_path / 'gentity.db'}"


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    path = _chromium()
    if path is None:
        message = "Chromium not found (apt-get install chromium): the browser tests need it"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=path, headless=True, args=CHROMIUM_ARGS
        )
        yield launched
        launched.close()


@dataclass
class Problems:
    """What went wrong inside the pages: uncaught errors and CSP violations."""

    errors: list[str] = field(default_factory=list)

    def watch(self, page: Page) -> None:
        page.on("pageerror", lambda exc: self.errors.append(f"uncaught: {exc}"))
        page.on("console", self._console)

    def _console(self, message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text or "Refused to" in message.text:
            self.errors.append(f"CSP: {message.text}")


@dataclass
class Browsing:
    browser: Browser
    server: LiveServer
    problems: Problems = field(default_factory=Problems)
    contexts: list[BrowserContext] = field(default_factory=list)

    def context(
        self,
        viewport: ViewportSize | None = None,
        signed_in_as: Page | None = None,
        *,
        bypass_csp: bool = False,
    ) -> BrowserContext:
        """A fresh browser profile; ``signed_in_as`` copies that page's cookies into it.

        ``bypass_csp`` lets the test inject a checker (axe-core) the page's CSP would refuse;
        the pages' own compliance with their CSP is checked by every other context.
        """
        made = self.browser.new_context(
            base_url=self.server.url,
            viewport=viewport or LAPTOP,
            locale="en-GB",
            storage_state=signed_in_as.context.storage_state() if signed_in_as else None,
            bypass_csp=bypass_csp,
        )
        made.set_default_timeout(15_000)
        made.on("page", self.problems.watch)
        self.contexts.append(made)
        return made

    def page(self, viewport: ViewportSize | None = None) -> Page:
        return self.context(viewport).new_page()

    def close(self) -> None:
        for made in self.contexts:
            made.close()


@pytest.fixture
def browsing(browser: Browser, server: LiveServer) -> Iterator[Browsing]:
    session = Browsing(browser, server)
    yield session
    session.close()
    assert session.problems.errors == [], session.problems.errors


def screenshot(page: Page, name: str, *, full_page: bool = True) -> None:
    """Save a screenshot for review under test-output/screenshots/ (not committed)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    # Generous timeout: on a loaded 2-core machine a busy page (live terminal and log stream)
    # can take a while to settle for the capture.
    page.screenshot(
        path=SCREENSHOTS / f"{name}.png", full_page=full_page, animations="disabled", timeout=60_000
    )


@pytest.fixture
def make_user(settings: Settings) -> Callable[[str], None]:
    """Create an extra (non-admin) account straight in the database."""

    def make(email: str) -> None:
        from gentity.server.db.database import Database
        from gentity.server.services.accounts import create_user

        async def run() -> None:
            db = Database(settings.resolved_database_url)
            try:
                async with db.session() as session:
                    await create_user(session, email, PASSWORD, admin=False)
            finally:
                await db.close()

        # Playwright's sync API keeps an event loop on this thread; use a thread of our own.
        failure: list[BaseException] = []

        def target() -> None:
            try:
                asyncio.run(run())
            except BaseException as exc:
                failure.append(exc)

        worker = threading.Thread(target=target)
        worker.start()
        worker.join(60)
        if failure:
            raise failure[0]

    return make
