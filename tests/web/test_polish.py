"""Details a new user notices: fonts, placeholders, confirmations, dismissible errors.

Where the server's answer does not matter, the API is answered by the test (``page.route``), so
these tests need no instance and run in seconds.
"""

from __future__ import annotations

import re

from playwright.sync_api import Page, Route, expect

from tests.web.conftest import Browsing, screenshot
from tests.web.helpers import set_up_admin

INSTANCE = {
    "id": "cfakeinstance0001",
    "name": "scratch",
    "subdomain": "sh-abc123",
    "agentType": "shell",
    "modelProvider": "none",
    "modelName": "bash",
    "region": None,
    "status": "running",
    "errorMessage": None,
    "createdAt": "2026-01-02T03:04:05Z",
    "updatedAt": "2026-01-02T03:04:05Z",
}


def _style(page: Page, selector: str, prop: str, pseudo: str | None = None) -> str:
    value: str = page.locator(selector).evaluate(
        "(node, [prop, pseudo]) => getComputedStyle(node, pseudo).getPropertyValue(prop)",
        [prop, pseudo],
    )
    return value


def test_a_new_token_is_monospace_and_the_name_field_is_cleared(browsing: Browsing) -> None:
    page = browsing.page()
    set_up_admin(page)
    page.goto("/dashboard/settings/tokens")
    page.get_by_label("Name").fill("laptop")
    page.get_by_role("button", name="Create token").click()
    expect(page.locator("[data-secret-value]")).to_have_value(re.compile(r"^gn_live_"))
    # I, l and 1 must look different: the token's own font, not the form's.
    token_font = _style(page, "[data-secret-value]", "font-family")
    assert token_font != _style(page, "#token-name", "font-family")
    assert "monospace" in token_font, token_font
    # The name field is empty again, and its placeholder does not pass for a value.
    name = page.get_by_label("Name")
    expect(name).to_have_value("")
    expect(name).to_have_attribute("placeholder", re.compile(r"^e\.g\. "))
    assert _style(page, "#token-name", "color", "::placeholder") != _style(
        page, "#token-name", "color"
    )
    assert _style(page, "#token-name", "font-style", "::placeholder") == "italic"
    screenshot(page, "polish-token-minted")


def _fake_instances(page: Page, actions: list[object]) -> None:
    """One running instance; every lifecycle action is refused, as a busy server would."""
    page.route(
        re.compile(r"/api/instances$"), lambda route: route.fulfill(json={"instances": [INSTANCE]})
    )

    def refuse(route: Route) -> None:
        actions.append(route.request.post_data_json)
        route.fulfill(status=409, json={"error": "the instance is busy"})

    page.route(re.compile(r"/api/instances/[^/]+/action$"), refuse)


def test_stop_and_restart_ask_first_and_errors_can_be_dismissed(browsing: Browsing) -> None:
    page = browsing.page()
    set_up_admin(page)
    # The empty list has exactly one primary button.
    expect(page.locator("[data-empty]")).to_be_visible()
    expect(page.locator(".button--primary:visible")).to_have_count(1)
    screenshot(page, "polish-dashboard-empty")

    actions: list[object] = []
    _fake_instances(page, actions)
    page.reload()
    row = page.locator("[data-instance]")
    expect(row.locator(".status")).to_have_text("Running")
    # The catalog's names, not its identifiers ("shell · none/bash").
    expect(row.locator(".instance__meta").first).to_have_text("Shell · Bash login shell")
    expect(row.locator("[data-field=model]")).to_have_attribute("title", "none/bash")
    dialog = page.get_by_role("dialog")
    for action, label in (("stop", "Stop"), ("restart", "Restart")):
        # Cancel (and Escape) leave the agent alone.
        row.locator("summary").click()
        row.get_by_role("button", name=label, exact=True).click()
        expect(dialog).to_be_visible()
        expect(dialog.get_by_role("heading")).to_have_text(f"{label} scratch?")
        dialog.get_by_role("button", name="Cancel").click()
        expect(dialog).to_be_hidden()
        row.locator("summary").click()
        row.get_by_role("button", name=label, exact=True).click()
        page.keyboard.press("Escape")
        expect(dialog).to_be_hidden()
        assert actions == []
        # Confirmed, it runs; the server's refusal is shown and can be dismissed.
        row.locator("summary").click()
        row.get_by_role("button", name=label, exact=True).click()
        if action == "stop":
            screenshot(page, "polish-stop-dialog", full_page=False)
        dialog.get_by_role("button", name=f"{label} instance").click()
        error = row.get_by_role("alert")
        expect(error).to_contain_text(f"Could not {action} scratch: the instance is busy")
        assert actions == [{"action": action}]
        actions.clear()
        error.get_by_role("button", name="Dismiss").click()
        expect(error).to_be_hidden()


def test_cancel_is_disabled_while_an_instance_is_created(browsing: Browsing) -> None:
    page = browsing.page()
    set_up_admin(page)
    held: list[Route] = []

    def hold_creates(route: Route) -> None:
        # Only the create: the list page just left may still be polling the same path.
        if route.request.method == "POST":
            held.append(route)
        else:
            route.continue_()

    page.route(re.compile(r"/api/instances$"), hold_creates)
    page.goto("/dashboard/new")
    page.get_by_label("Shell", exact=True).check()
    cancel = page.get_by_role("link", name="Cancel")
    expect(cancel).to_be_enabled()
    page.get_by_role("button", name="Create instance").click()
    expect(page.locator("[data-progress]")).to_contain_text("still being created")
    expect(cancel).to_be_disabled()
    screenshot(page, "polish-new-creating")
    # Clicking it anyway goes nowhere.
    cancel.click(force=True)
    expect(page).to_have_url(re.compile(r"/dashboard/new$"))
    assert len(held) == 1
    held[0].fulfill(status=503, json={"error": "no capacity"})
    expect(page.locator("[data-error]")).to_contain_text("no capacity")
    expect(cancel).to_be_enabled()


def test_the_create_form_is_centred_at_a_readable_width(browsing: Browsing) -> None:
    page = browsing.page({"width": 1440, "height": 900})
    set_up_admin(page)
    page.goto("/dashboard/new")
    expect(page.get_by_label("Shell", exact=True)).to_be_visible()
    form = page.locator("#new-form").bounding_box()
    heading = page.get_by_role("heading", name="New instance").bounding_box()
    assert form and heading
    assert abs(form["x"] + form["width"] / 2 - 720) < 2, form
    assert 480 <= form["width"] <= 800, form
    # The heading sits over the form, not off at the page's edge.
    assert abs(heading["x"] - form["x"]) < 2, (heading, form)
    screenshot(page, "polish-new-instance-1440")


def test_the_list_opens_rows_searches_sorts_and_offers_only_allowed_actions(
    browsing: Browsing,
) -> None:
    page = browsing.page({"width": 1440, "height": 900})
    set_up_admin(page)
    instances = [
        {**INSTANCE, "id": "cfake1", "name": "beta", "subdomain": "sh-bbbbbb"},
        {
            **INSTANCE,
            "id": "cfake2",
            "name": "alpha",
            "subdomain": "cl-aaaaaa",
            "agentType": "claude-code",
            "modelProvider": "anthropic",
            "modelName": "claude-sonnet-4-5",
            "status": "stopped",
            "createdAt": "2026-01-03T03:04:05Z",
        },
    ]
    page.route(
        re.compile(r"/api/instances$"),
        lambda route: route.fulfill(json={"instances": instances}),
    )
    page.reload()
    rows = page.locator("[data-instance]")
    expect(rows).to_have_count(2)
    # Newest first; then by name.
    expect(rows.locator(".instance__name")).to_have_text(["alpha", "beta"])
    page.get_by_label("Sort by").select_option("name")
    expect(rows.locator(".instance__name")).to_have_text(["alpha", "beta"])
    page.get_by_label("Sort by").select_option("status")
    expect(rows.locator(".instance__name")).to_have_text(["beta", "alpha"])
    beta = rows.filter(has_text="beta")
    # "Open" is the primary action; the subdomain is a link to the full-screen terminal.
    expect(beta.get_by_role("link", name="Open beta")).to_have_attribute(
        "href", "/dashboard/instances/cfake1"
    )
    expect(beta.get_by_role("link", name="sh-bbbbbb")).to_have_attribute(
        "href", "/dashboard/open/sh-bbbbbb"
    )
    # Relative times, the exact one on hover.
    created = beta.locator("time")
    expect(created).to_have_text(re.compile(r"ago|yesterday|last"))
    expect(created).to_have_attribute("title", re.compile(r"2026"))
    # The menu lists what the status allows, nothing greyed out.
    beta.locator("summary").click()
    expect(beta.get_by_role("button", name="Stop", exact=True)).to_be_visible()
    expect(beta.get_by_role("button", name="Start", exact=True)).to_be_hidden()
    screenshot(page, "polish-dashboard-menu", full_page=False)
    page.keyboard.press("Escape")
    expect(beta.get_by_role("button", name="Stop", exact=True)).to_be_hidden()
    alpha = rows.filter(has_text="alpha")
    alpha.locator("summary").click()
    expect(alpha.get_by_role("button", name="Start", exact=True)).to_be_visible()
    expect(alpha.get_by_role("button", name="Stop", exact=True)).to_be_hidden()
    page.keyboard.press("Escape")
    # Search by name, agent or model as shown.
    page.get_by_label("Search instances").fill("claude sonnet")
    expect(rows.filter(visible=True)).to_have_count(1)
    expect(rows.filter(visible=True).locator(".instance__name")).to_have_text("alpha")
    page.get_by_label("Search instances").fill("nothing like it")
    expect(rows.filter(visible=True)).to_have_count(0)
    expect(page.locator("[data-no-match]")).to_be_visible()
    page.get_by_label("Search instances").fill("")
    expect(rows.filter(visible=True)).to_have_count(2)
    # A click anywhere on the row opens the instance.
    beta.locator(".instance__meta").first.click()
    expect(page).to_have_url(re.compile(r"/dashboard/instances/cfake1$"))
