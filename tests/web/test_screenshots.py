"""Screenshots of every page at a laptop's and a phone's size, light and dark, for review.

Saved under ``test-output/screenshots/pages/`` (git-ignored; ``.ci/run`` leaves them in the
clone's ``test-output/``). Each page must also fit the width it is shown at (nothing scrolls
sideways) and pass axe-core's accessibility rules (vendored in ``tests/web/vendor/axe-core``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import pytest
from playwright.sync_api import Page, ViewportSize, expect

from tests.conftest import LiveServer
from tests.web.conftest import Browsing, screenshot
from tests.web.helpers import create_shell_instance, set_up_admin

SIZES: dict[str, ViewportSize] = {
    "1440x900": {"width": 1440, "height": 900},
    "390x844": {"width": 390, "height": 844},
}
SCHEMES: tuple[Literal["light", "dark"], ...] = ("light", "dark")
TERMINAL_STATE = "[data-terminal-state]"
AXE = Path(__file__).parent / "vendor" / "axe-core" / "axe.min.js"
# Each violation as "rule (impact): the elements", enough to find it.
AXE_RUN = """async () => {
  const result = await axe.run(document, { resultTypes: ["violations"] });
  return result.violations.map(
    (v) => `${v.id} (${v.impact}): ${v.nodes.map((n) => n.target.join(" ")).join(", ")}`
  );
}"""


def _settle(page: Page, path: str) -> None:
    page.goto(path)
    page.wait_for_load_state("networkidle")
    if page.locator(TERMINAL_STATE).count():
        expect(page.locator(TERMINAL_STATE)).to_have_text("Connected", timeout=30_000)
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1"), (
        f"{path} scrolls sideways at {page.viewport_size}"
    )
    page.add_script_tag(path=AXE)
    violations = page.evaluate(AXE_RUN)
    assert violations == [], (path, page.viewport_size, violations)


@pytest.mark.timeout(300)
def test_every_page_at_both_sizes_light_and_dark(browsing: Browsing, server: LiveServer) -> None:
    # The first-run page exists only until the first account does.
    for size, viewport in SIZES.items():
        for scheme in SCHEMES:
            first = browsing.context(viewport, bypass_csp=True).new_page()
            first.emulate_media(color_scheme=scheme)
            _settle(first, "/setup")
            expect(first).to_have_url(re.compile(r"/setup$"))
            screenshot(first, f"pages/setup-{size}-{scheme}")
            first.context.close()
    admin = browsing.page()
    set_up_admin(admin)
    instance_id = create_shell_instance(admin)
    subdomain = admin.locator("[data-field=subdomainLink]").inner_text()
    admin.goto("/dashboard/settings/tokens")
    admin.get_by_label("Name").fill("laptop")
    admin.get_by_role("button", name="Create token").click()
    expect(admin.locator("[data-secret-value]")).not_to_have_value("")

    pages = {
        "dashboard": "/dashboard",
        "new-instance": "/dashboard/new",
        "instance": f"/dashboard/instances/{instance_id}",
        "tokens": "/dashboard/settings/tokens",
        "not-found": "/dashboard/nowhere",
        "fullscreen-terminal": f"/dashboard/open/{subdomain}",
    }
    for size, viewport in SIZES.items():
        for scheme in SCHEMES:
            signed_in = browsing.context(viewport, signed_in_as=admin, bypass_csp=True)
            anonymous = browsing.context(viewport, bypass_csp=True)
            page = signed_in.new_page()
            page.emulate_media(color_scheme=scheme)
            for name, path in pages.items():
                _settle(page, path)
                screenshot(
                    page, f"pages/{name}-{size}-{scheme}", full_page=name != "fullscreen-terminal"
                )
            visitor = anonymous.new_page()
            visitor.emulate_media(color_scheme=scheme)
            _settle(visitor, "/login")
            screenshot(visitor, f"pages/login-{size}-{scheme}")
            signed_in.close()
            anonymous.close()
