"""A server that restarts settles the operations it owned at once, not after their lease.

The crash is staged by leaving rows as a server killed mid-operation leaves them (transitional,
owned by this node, lease still fresh), then starting a server on the same data directory.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx

from gentity.server.db.ids import utcnow
from gentity.settings import Settings
from tests.conftest import LiveServer, mint_token, signup
from tests.server.test_instances import create_shell
from tests.server.test_reconciler import set_row

CONVERGENCE_SECONDS = 10


def test_restart_settles_its_own_operations(
    server_factory: Callable[[Settings], LiveServer], settings: Settings
) -> None:
    first = server_factory(settings)
    api = httpx.Client(base_url=first.url, timeout=60)
    assert signup(api, "admin@example.com").status_code == 200
    headers = {"Authorization": f"Bearer {mint_token(api)}"}
    api.headers.update(headers)
    booted = create_shell(api)["id"]  # its machine came up; the crash hit before "running"
    unsaved = create_shell(api)["id"]  # killed before its machine's handle was saved
    first.stop()

    # Owned by a server process of this node that is gone (its boot lock is free).
    node = (settings.data_dir / "node-id").read_text().strip()
    owned = {"operation_owner": f"{node}/0123456789abcdef", "updated_at": utcnow()}
    set_row(settings, booted, status="starting", **owned)
    set_row(settings, unsaved, status="provisioning", provider_ref=None, **owned)
    assert (settings.data_dir / "instances" / unsaved).exists()

    started = time.monotonic()
    second = server_factory(settings)
    with httpx.Client(base_url=second.url, timeout=60, headers=headers) as api:
        while time.monotonic() - started < CONVERGENCE_SECONDS:
            states = {i["id"]: i for i in api.get("/api/instances").json()["instances"]}
            if states[booted]["status"] == "running" and states[unsaved]["status"] == "error":
                break
            time.sleep(0.1)
        assert states[booted]["status"] == "running"
        assert states[unsaved]["status"] == "error"
        assert "interrupted while being created" in states[unsaved]["errorMessage"]
        assert not (settings.data_dir / "instances" / unsaved).exists()
        for iid in (booted, unsaved):
            assert api.delete(f"/api/instances/{iid}").status_code == 200
