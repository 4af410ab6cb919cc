"""What an instance is doing, as it happens: the agent's health, its size and region, and
lifecycle steps taken elsewhere (another tab, the CLI) showing up on an open page."""

from __future__ import annotations

import re
import socket
from typing import Any

import pytest
from playwright.sync_api import Page, Route, expect

from tests.web.conftest import Browsing, screenshot
from tests.web.helpers import CREATE_TIMEOUT_MS, run_in_terminal, set_up_admin

STATUS = ".page-head [data-field=status]"
TERMINAL_STATE = "[data-terminal-state]"
TERMINAL_ROWS = "[data-terminal-screen] .xterm-rows"

BASE: dict[str, Any] = {
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
READY = {
    **BASE,
    "id": "cfakeready",
    "name": "ready one",
    "agent": {
        "state": "ready",
        "restarts": 0,
        "lastExitCode": None,
        "lastExitAt": None,
        "readyAt": "2026-01-02T03:04:07Z",
    },
}
CRASHING = {
    **BASE,
    "id": "cfakecrashing",
    "name": "crashing one",
    "region": "local",
    "agent": {
        "state": "backoff",
        "restarts": 2,
        "lastExitCode": 1,
        "lastExitAt": "2026-01-02T03:05:00Z",
        "readyAt": None,
    },
}
SILENT = {**BASE, "id": "cfakesilent", "name": "silent one", "agent": None}
STOPPED = {**BASE, "id": "cfakestopped", "name": "stopped one", "status": "stopped", "agent": None}


def _shell_size(page: Page) -> str:
    agents = page.request.get("/api/catalog/agents").json()["agents"]
    shell = next(a for a in agents if a["id"] == "shell")
    cpus, memory, volume = shell["defaultCpus"], shell["defaultMemoryMb"], shell["defaultVolumeGb"]
    memory_text = f"{memory // 1024} GB" if memory % 1024 == 0 else f"{memory} MB"
    return f"{cpus} CPU{'' if cpus == 1 else 's'} · {memory_text} memory · {volume} GB volume"


def test_agent_health_size_and_region_are_shown(browsing: Browsing) -> None:
    page = browsing.page()
    set_up_admin(page)
    instances = [READY, CRASHING, SILENT, STOPPED]
    page.route(
        re.compile(r"/api/instances$"), lambda route: route.fulfill(json={"instances": instances})
    )
    page.goto("/dashboard")
    size = _shell_size(page)

    def row(name: str) -> Any:
        return page.locator("[data-instance]").filter(has_text=name)

    health = "[data-field=health]"
    expect(row("ready one").locator(health)).to_have_text("Agent ready")
    expect(row("ready one").locator(health)).to_have_attribute(
        "title", re.compile(r"^Not restarted · ready since ")
    )
    expect(row("crashing one").locator(health)).to_have_text("Agent crashed, restarting")
    expect(row("crashing one").locator(health)).to_have_attribute(
        "title", re.compile(r"^Restarted 2 times · last exit with code 1 ")
    )
    expect(row("silent one").locator(health)).to_have_text("Agent not answering")
    # A stopped instance has no agent to speak of.
    expect(row("stopped one").locator(health)).to_be_hidden()
    expect(row("ready one").locator("[data-field=resources]")).to_have_text(size)
    expect(row("crashing one").locator("[data-field=resources]")).to_have_text(f"{size} · local")
    screenshot(page, "lifecycle-list-health")


def test_the_list_says_what_it_asked_for_until_the_server_answers(browsing: Browsing) -> None:
    page = browsing.page()
    set_up_admin(page)
    stopped = {**STOPPED, "name": "scratch"}
    page.route(
        re.compile(r"/api/instances$"),
        lambda route: route.fulfill(json={"instances": [stopped]}),
    )
    held: list[Route] = []
    page.route(re.compile(r"/action$"), lambda route: held.append(route))
    page.goto("/dashboard")
    row = page.locator("[data-instance]").filter(has_text="scratch")
    badge = row.locator("[data-field=status]")
    expect(badge).to_have_text("Stopped")
    row.locator("summary").click()
    row.get_by_role("button", name="Start").click()
    # The server answers a start once the machine runs; meanwhile the badge says Starting,
    # and a poll (every 3 s) does not put Stopped back.
    expect(badge).to_have_text("Starting")
    page.wait_for_timeout(3500)
    expect(badge).to_have_text("Starting")
    screenshot(page, "lifecycle-list-starting")
    assert [r.request.post_data_json for r in held] == [{"action": "start"}]
    stopped["status"] = "running"
    held[0].fulfill(json={"ok": True})
    expect(badge).to_have_text("Running")


def test_an_unknown_region_is_reported_under_the_picker(browsing: Browsing) -> None:
    page = browsing.page()
    set_up_admin(page)
    # A region that has gone since the page loaded: the server's refusal lands on the picker.
    page.route(
        re.compile(r"/api/instances$"),
        lambda route: route.fulfill(
            status=400, json={"error": "region: unknown region 'iad' (choose one of: local)"}
        ),
    )
    page.goto("/dashboard/new")
    page.get_by_label("Shell", exact=True).check()
    page.get_by_label("Region").select_option("local")
    page.get_by_role("button", name="Create instance").click()
    error = page.locator(".field:has(#region) .field-error")
    expect(error).to_have_text("region: unknown region 'iad' (choose one of: local)")
    expect(page.get_by_label("Region")).to_have_value("local")


@pytest.mark.timeout(300)
def test_steps_taken_in_another_tab_show_as_they_happen(browsing: Browsing) -> None:
    page = browsing.page()
    set_up_admin(page)

    # The region is picked from the provider's list: the local provider has this host.
    page.goto("/dashboard/new")
    region = page.get_by_label("Region")
    expect(region.locator("option")).to_have_text(
        ["Default", f"This host ({socket.gethostname()}) · local"]
    )
    page.get_by_label("Shell", exact=True).check()
    page.get_by_label("Name").fill("tabs")
    region.select_option("local")
    screenshot(page, "lifecycle-region-picker")
    page.get_by_role("button", name="Create instance").click()
    expect(page).to_have_url(re.compile(r"/dashboard/instances/c\w+$"), timeout=CREATE_TIMEOUT_MS)
    expect(page.locator(".details [data-field=region]")).to_have_text("local")
    # The instance page shows the agent's health with the detail in words, not on hover.
    expect(page.locator(".details [data-field=health]")).to_have_text("Agent ready", timeout=30_000)
    expect(page.locator("[data-field=healthDetail]")).to_contain_text("Not restarted · ready since")
    expect(page.locator(".details [data-field=resources]")).to_have_text(_shell_size(page))
    expect(page.locator(TERMINAL_STATE)).to_have_text("Connected", timeout=30_000)
    run_in_terminal(page, "echo before-$((6*7))")
    expect(page.locator(TERMINAL_ROWS)).to_contain_text("before-42", timeout=15_000)
    # The full-screen terminal on the subdomain watches too.
    with page.context.expect_page() as opened:
        page.get_by_role("link", name="Open full screen").click()
    full = opened.value
    expect(full.locator(TERMINAL_STATE)).to_have_text("Connected", timeout=30_000)
    expect(full.locator(TERMINAL_ROWS)).to_contain_text("before-42", timeout=15_000)

    # Another tab restarts it: this page tells a restart, not a process that died, and says
    # the earlier output is gone.
    other = browsing.context(signed_in_as=page).new_page()
    other.goto("/dashboard")
    row = other.locator("[data-instance]").filter(has_text="tabs")
    row.locator("summary").click()
    row.get_by_role("button", name="Restart").click()
    other.get_by_role("dialog").get_by_role("button", name="Restart instance").click()
    expect(page.locator(TERMINAL_ROWS)).to_contain_text(
        "restarted: a fresh session; earlier output is gone", timeout=60_000
    )
    expect(page.locator(TERMINAL_ROWS)).not_to_contain_text("before-42")
    expect(page.locator(TERMINAL_STATE)).to_have_text("Connected", timeout=30_000)
    expect(page.locator(STATUS)).to_have_text("Running")
    screenshot(page, "lifecycle-restarted-elsewhere")
    expect(full.locator(TERMINAL_ROWS)).to_contain_text(
        "restarted: a fresh session; earlier output is gone", timeout=30_000
    )
    expect(full.locator(TERMINAL_STATE)).to_have_text("Connected", timeout=30_000)
    full.close()

    # A process that ignores hang-ups makes the stop take a few seconds (the guest's grace
    # period): long enough to see every step on this page while the other tab stops it.
    run_in_terminal(page, "trap '' HUP TERM; sleep 300")
    row.locator("summary").click()
    row.get_by_role("button", name="Stop").click()
    other.get_by_role("dialog").get_by_role("button", name="Stop instance").click()
    expect(page.locator(STATUS)).to_have_text("Stopping", timeout=10_000)
    screenshot(page, "lifecycle-stopping-elsewhere")
    expect(page.locator(STATUS)).to_have_text("Stopped", timeout=60_000)
    expect(page.locator(TERMINAL_STATE)).to_have_text(
        "The instance is stopped. Start it to use the terminal."
    )
    expect(page.locator(TERMINAL_ROWS)).not_to_contain_text("exited with")
    expect(page.locator(".details [data-field=health]")).to_be_hidden()
    expect(row.locator("[data-field=status]")).to_have_text("Stopped", timeout=10_000)

    # The events panel told the whole story as it happened, newest first, with who asked.
    events = page.locator("[data-events] .event")
    expect(events.locator(".event__change")).to_have_text(
        [
            "Stopping → Stopped",
            "Running → Stopping",
            "Restarting → Running",
            "Running → Restarting",
            "Starting → Running",
            "Provisioning → Starting",
            "Provisioning",
        ],
        timeout=10_000,
    )
    expect(events.nth(1).locator(".event__actor")).to_have_text("by a dashboard session")
    screenshot(page, "lifecycle-events")
    # A reload shows the same history (each event once), read back from the server.
    page.reload()
    expect(page.locator("[data-events] .event .event__change")).to_have_count(7)
