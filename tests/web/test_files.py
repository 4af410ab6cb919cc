"""The instance page's files panel: listing the working directory, opening a directory,
downloading through a link, uploading with the button, and what a stopped instance shows."""

from __future__ import annotations

from pathlib import Path

from playwright.sync_api import expect

from tests.web.conftest import Browsing, screenshot
from tests.web.helpers import CREATE_TIMEOUT_MS, create_shell_instance, set_up_admin

DATA = bytes(range(256)) * 16


def test_files_panel_lists_downloads_and_uploads(browsing: Browsing) -> None:
    page = browsing.page()
    set_up_admin(page)
    iid = create_shell_instance(page, "files")
    files = f"/api/instances/{iid}/files"
    put = page.request.put(f"{files}?path=notes/todo.txt", data=b"remember")
    assert put.status == 201, put.text()
    page.reload()
    panel = page.locator("[data-files]")
    notes = panel.locator("[data-file=notes]")
    expect(notes).to_contain_text("notes/")

    # Into a directory and back.
    notes.get_by_role("button").click()
    expect(panel.locator("[data-files-where]")).to_have_text("work/notes")
    expect(panel.locator("[data-file='todo.txt']")).to_contain_text("8 bytes")

    # Upload into the directory shown, then download it again through its link.
    panel.locator("[data-files-upload]").set_input_files(
        {"name": "blob.bin", "mimeType": "application/octet-stream", "buffer": DATA}
    )
    expect(panel.locator("[data-files-status]")).to_have_text("Uploaded blob.bin.")
    row = panel.locator("[data-file='blob.bin']")
    expect(row).to_contain_text("4.0 KB")
    panel.scroll_into_view_if_needed()
    screenshot(page, "instance-files", full_page=False)
    stored = page.request.get(f"{files}?path=notes/blob.bin")
    assert stored.body() == DATA
    with page.expect_download() as caught:
        row.get_by_role("link", name="blob.bin").click()
    download = caught.value
    assert download.suggested_filename == "blob.bin"
    assert Path(download.path()).read_bytes() == DATA

    panel.get_by_role("button", name="Up one level").click()
    expect(panel.locator("[data-files-where]")).to_have_text("work")
    expect(panel.get_by_role("button", name="Up one level")).to_be_hidden()

    # A refused upload says why, next to the panel.
    page.request.put(f"{files}?path=taken/x", data=b"x")
    page.reload()
    expect(panel.locator("[data-file=taken]")).to_be_visible()
    panel.locator("[data-files-upload]").set_input_files(
        {"name": "taken", "mimeType": "text/plain", "buffer": b"x"}
    )
    expect(panel.locator("[data-files-error]")).to_contain_text("is a directory")

    # Stopped: no listing, and the upload is off until it runs again.
    assert page.request.post(
        f"/api/instances/{iid}/action", data={"action": "stop"}, timeout=CREATE_TIMEOUT_MS
    ).ok
    expect(panel.locator("[data-files-status]")).to_contain_text("Its files can be reached")
    expect(panel.locator("[data-files-table]")).to_be_hidden()
    expect(panel.locator("[data-files-upload]")).to_be_disabled()
    page.request.delete(f"/api/instances/{iid}", timeout=CREATE_TIMEOUT_MS)
    assert browsing.problems.errors == []
