"""Auto-stop on the dashboard: the new-instance form sets it, the instance page says when the
instance will stop if it stays idle (or that it never will)."""

from __future__ import annotations

import re
from typing import Any

from playwright.sync_api import Page, Request, expect

from tests.web.conftest import Browsing, screenshot
from tests.web.helpers import CREATE_TIMEOUT_MS, set_up_admin

AUTO_STOP = "[data-field=autoStop]"


def _local_hh_mm(page: Page, value: str) -> str:
    """The time as the browser's clock reads it (its time zone, not the test's)."""
    hh_mm: str = page.evaluate(
        """(value) => {
             const d = new Date(value);
             const two = (n) => String(n).padStart(2, "0");
             return `${two(d.getHours())}:${two(d.getMinutes())}`;
           }""",
        value,
    )
    return hh_mm


def test_the_form_sets_auto_stop_and_the_page_shows_when(browsing: Browsing) -> None:
    page = browsing.page()
    set_up_admin(page)
    page.goto("/dashboard/new")
    page.get_by_label("Shell", exact=True).check()
    page.get_by_label("Name").fill("sleepy")
    field = page.get_by_label("Auto-stop after (minutes idle)")

    # Refused in the page, before anything is sent.
    sent: list[Request] = []
    page.on("request", lambda r: sent.append(r) if r.method == "POST" else None)
    field.fill("-1")
    page.get_by_role("button", name="Create instance").click()
    expect(page.locator("#autoStopMinutes-error")).to_contain_text("0 to 10080")
    expect(field).to_have_attribute("aria-invalid", "true")
    assert sent == []

    field.fill("30")
    page.get_by_role("button", name="Create instance").click()
    expect(page).to_have_url(re.compile(r"/dashboard/instances/c\w+$"), timeout=CREATE_TIMEOUT_MS)
    assert [(r.post_data_json or {}).get("autoStopMinutes") for r in sent] == [30]
    iid = page.url.rsplit("/", 1)[1]

    shown: dict[str, Any] = page.request.get(f"/api/instances/{iid}").json()
    assert shown["autoStopMinutes"] == 30 and shown["autoStopAt"]
    expected = _local_hh_mm(page, shown["autoStopAt"])
    # (With the day first when that is not today: a test run just before midnight.)
    expect(page.locator(AUTO_STOP)).to_have_text(
        re.compile(rf"^Stops when idle at (\d+ \w+ )?{expected} \(after 30 min without activity\)$")
    )
    screenshot(page, "autostop-instance")

    # The same page for an instance without auto-stop, as the server would answer it.
    page.route(
        re.compile(rf"/api/instances/{iid}$"),
        lambda route: route.fulfill(json={**shown, "autoStopMinutes": 0, "autoStopAt": None}),
    )
    page.reload()
    expect(page.locator(AUTO_STOP)).to_have_text("Never")
    page.unroute(re.compile(rf"/api/instances/{iid}$"))

    # Stopped: nothing is due, the setting is still said.
    page.request.post(f"/api/instances/{iid}/action", data={"action": "stop"})
    page.reload()
    expect(page.locator(AUTO_STOP)).to_have_text("While running, after 30 min without activity")
    page.request.delete(f"/api/instances/{iid}")
