"""A server whose instances are Fly machines (the fake Fly): the whole path, end to end."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx
import pytest

from gentity.settings import Settings
from tests.conftest import LiveServer
from tests.fly.conftest import TOKEN, FakeFly
from tests.server.terminal_client import Terminal, ws_url
from tests.server.test_instances import create_shell


@pytest.fixture
def settings(
    settings_factory: Callable[..., Settings],
    fake: FakeFly,
    sandboxes: None,
    monkeypatch: pytest.MonkeyPatch,
) -> Settings:
    for name, value in {
        "API_URL": fake.url,
        "LOGS_URL": fake.url,
        "API_TOKEN": TOKEN,
        "EDGE": f"127.0.0.1:{fake.edge_port}",
        "CA_FILE": str(fake.ca_file),
    }.items():
        monkeypatch.setenv(f"GENTITY_FLY_{name}", value)
    return settings_factory(compute_provider="fly")


def test_a_shell_instance_on_fly(
    fake: FakeFly, server: LiveServer, bearer: httpx.Client, token: str
) -> None:
    iid = create_shell(bearer)["id"]
    assert list(fake.fleet.apps) == [f"gentity-{iid}"]
    base = str(bearer.base_url)

    def act(action: str) -> httpx.Response:
        return bearer.post(f"/api/instances/{iid}/action", json={"action": action})

    async def run_in_terminal(command: str, marker: str) -> str:
        term = await Terminal.open(ws_url(base, iid, token))
        await term.send(f"{command}\r")
        output = await term.expect(marker, timeout=20)
        await term.close()
        return output

    def messages() -> list[str]:
        response = bearer.get(f"/api/instances/{iid}/logs", params={"lines": 1000})
        assert response.status_code == 200, response.text
        return [line["message"] for line in response.json()["logs"]]

    asyncio.run(run_in_terminal("echo kept > notes.txt; echo on-fly-$((40+2))", "on-fly-42"))
    assert any("on-fly-42" in m for m in messages())  # through the guest
    assert act("stop").json() == {"ok": True}
    assert bearer.get(f"/api/instances/{iid}").json()["status"] == "stopped"
    assert any("on-fly-42" in m for m in messages())  # from Fly's logs API
    assert act("start").json() == {"ok": True}
    assert bearer.get(f"/api/instances/{iid}").json()["status"] == "running"
    output = asyncio.run(run_in_terminal("cat notes.txt; echo back-$((1+1))", "back-2"))
    assert "kept" in output.split("back-$((1+1))")[-1]  # the volume survived stop and start
    assert bearer.delete(f"/api/instances/{iid}").json() == {"ok": True}
    assert bearer.get(f"/api/instances/{iid}").status_code == 404
    assert not fake.fleet.apps  # the app, with its machine and volume, is gone
