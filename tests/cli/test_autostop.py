"""``gentity compute create --auto-stop`` and the auto-stop time in ``show`` and ``ls``."""

from __future__ import annotations

from datetime import datetime

import httpx

from tests.cli.conftest import Cli


def test_auto_stop_is_set_at_create_and_shown(logged_in: Cli, admin: httpx.Client) -> None:
    created = logged_in.json("compute", "create", "--agent", "shell", "--auto-stop", "45")
    iid = created["id"]
    try:
        shown = logged_in.json("compute", "show", iid)
        assert shown["autoStopMinutes"] == 45
        stop_at = datetime.fromisoformat(shown["autoStopAt"]).astimezone()
        # Printed in local time, like every other time the CLI shows.
        local = stop_at.strftime("%Y-%m-%d %H:%M")
        assert f"{local} (after 45 min idle)" in logged_in.ok("compute", "show", iid)
        listing = logged_in.ok("compute", "ls")
        assert "AUTO-STOP" in listing and local in listing

        # Stopped, nothing is due; the setting stays.
        logged_in.ok("compute", "stop", iid)
        text = logged_in.ok("compute", "show", iid)
        assert "after 45 min idle" in text and local not in text
    finally:
        admin.delete(f"/api/instances/{iid}", timeout=60)


def test_zero_is_never_and_out_of_range_is_refused(logged_in: Cli, admin: httpx.Client) -> None:
    created = logged_in.json("compute", "create", "--agent", "shell", "--auto-stop", "0")
    try:
        assert logged_in.json("compute", "show", created["id"])["autoStopAt"] is None
        assert "never" in logged_in.ok("compute", "show", created["id"])
    finally:
        admin.delete(f"/api/instances/{created['id']}", timeout=60)
    refused = logged_in("compute", "create", "--agent", "shell", "--auto-stop", "-1")
    assert refused.returncode != 0
    assert "--auto-stop" in refused.stderr
    assert admin.get("/api/instances").json()["instances"] == []
