"""Replicas sharing one database: each leaves the other's local instances alone."""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from gentity.settings import Settings
from tests.conftest import LiveServer, mint_token, signup
from tests.server.test_instances import create_shell


def test_a_replica_on_another_host_leaves_local_instances_alone(
    server_factory: Callable[[Settings], LiveServer],
    settings_factory: Callable[..., Settings],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Two hosts, as far as the local provider can tell: a data directory each.
    monkeypatch.setenv("GENTITY_LOCAL_WARM_SPARES", "0")
    key = base64.b64encode(os.urandom(32)).decode()
    first = server_factory(settings_factory(secret_key=key))
    with httpx.Client(base_url=first.url, timeout=60) as api:
        assert signup(api, "admin@example.com").status_code == 200
        api.headers["Authorization"] = f"Bearer {mint_token(api)}"
        instance = create_shell(api)
        try:
            second = server_factory(settings_factory(secret_key=key, data_dir=tmp_path / "b"))
            # Its start-up pass and a few periodic ones (every second) run meanwhile.
            time.sleep(3.5)
            seen = api.get(f"{second.url}/api/instances/{instance['id']}").json()
            assert seen["status"] == "running", seen
            assert seen["errorMessage"] is None
        finally:
            assert api.delete(f"/api/instances/{instance['id']}").status_code == 200
