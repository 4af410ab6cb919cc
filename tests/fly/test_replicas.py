"""Two control-plane replicas on one database and one (fake) Fly serve the same instances:
made through one, used through the other, and neither marks the other's work as failed."""

from __future__ import annotations

import asyncio
import base64
import os
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from gentity.settings import Settings
from tests.conftest import LiveServer, mint_token, signup
from tests.fly.conftest import TOKEN, FakeFly
from tests.server.terminal_client import Terminal, ws_url
from tests.server.test_instances import create_shell
from tests.waiting import wait_until_blocking


@pytest.fixture
def on_fly(fake: FakeFly, sandboxes: None, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "API_URL": fake.url,
        "LOGS_URL": fake.url,
        "API_TOKEN": TOKEN,
        "EDGE": f"127.0.0.1:{fake.edge_port}",
        "CA_FILE": str(fake.ca_file),
    }.items():
        monkeypatch.setenv(f"GENTITY_FLY_{name}", value)


def test_two_replicas_serve_the_same_fly_instances(
    on_fly: None,
    fake: FakeFly,
    server_factory: Callable[[Settings], LiveServer],
    settings_factory: Callable[..., Settings],
    tmp_path: Path,
) -> None:
    key = base64.b64encode(os.urandom(32)).decode()  # the replicas share their secret key
    first = server_factory(settings_factory(secret_key=key, compute_provider="fly"))
    second = server_factory(
        settings_factory(secret_key=key, compute_provider="fly", data_dir=tmp_path / "b")
    )
    with httpx.Client(base_url=first.url, timeout=120) as api:
        assert signup(api, "admin@example.com").status_code == 200
        token = mint_token(api)
        api.headers["Authorization"] = f"Bearer {token}"
        instance = create_shell(api)
        iid = instance["id"]
        other = f"{second.url}/api/instances/{iid}"

        async def through_second() -> None:
            term = await Terminal.open(ws_url(second.url, iid, token))
            await term.send("echo via-second-$((20+1))\r")
            await term.expect("via-second-21", timeout=20)
            await term.close()

        asyncio.run(through_second())

        def logged() -> bool:
            lines = api.get(f"{other}/logs", params={"lines": 200}).json()["logs"]
            return any("via-second-21" in line["message"] for line in lines)

        wait_until_blocking(logged, "the second replica reads the line from the guest")
        # A stop through the second replica is what the first one sees; both reconcilers run
        # every second meanwhile, and neither marks the instance failed.
        assert api.post(f"{other}/action", json={"action": "stop"}).status_code == 200
        assert api.get(f"/api/instances/{iid}").json()["status"] == "stopped"
        assert api.post(f"/api/instances/{iid}/action", json={"action": "start"}).json() == {
            "ok": True
        }
        # The point is that nothing happens: both reconcilers (every second) get a few passes.
        time.sleep(3)
        seen = [api.get(f"{url}/api/instances/{iid}").json() for url in (first.url, second.url)]
        assert [s["status"] for s in seen] == ["running", "running"], seen
        assert all(s["errorMessage"] is None for s in seen)
        events = api.get(f"/api/instances/{iid}/events", params={"limit": 50}).json()["events"]
        assert "error" not in [e["to"] for e in events]
        assert api.delete(f"{other}").status_code == 200
        assert not fake.fleet.apps
