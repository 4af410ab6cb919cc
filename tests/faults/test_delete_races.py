"""DELETE wins over an operation in flight: it cancels it, answers 200 once everything is
gone, and the row ends ``destroyed`` with nothing left on disk."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

import httpx
import pytest
from sqlalchemy import select

from gentity.server.db.database import Database
from gentity.server.db.orm import Instance, InstanceEvent
from gentity.settings import Settings
from tests.conftest import LiveServer, mint_token, signup
from tests.server.test_instances import SHELL, create_shell


@pytest.fixture
def api(
    server_factory: Callable[[Settings], LiveServer],
    settings_factory: Callable[..., Settings],
    monkeypatch: pytest.MonkeyPatch,
) -> httpx.Client:
    # Cold boots (no warm spare) leave time to catch each operation in flight.
    monkeypatch.setenv("GENTITY_LOCAL_WARM_SPARES", "0")
    server = server_factory(settings_factory())
    client = httpx.Client(base_url=server.url, timeout=60)
    assert signup(client, "admin@example.com").status_code == 200
    client.headers["Authorization"] = f"Bearer {mint_token(client)}"
    return client


def _in_background(call: Callable[[], httpx.Response]) -> Callable[[], httpx.Response]:
    result: list[httpx.Response] = []
    thread = threading.Thread(target=lambda: result.append(call()), daemon=True)
    thread.start()

    def join() -> httpx.Response:
        thread.join(60)
        return result[0]

    return join


def _wait_for_status(api: httpx.Client, wanted: set[str], iid: str | None = None) -> str:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for one in api.get("/api/instances").json()["instances"]:
            if (iid is None or one["id"] == iid) and one["status"] in wanted:
                return str(one["id"])
        time.sleep(0.005)
    raise AssertionError(f"no instance became {wanted}")


def _assert_gone(api: httpx.Client, settings: Settings, iid: str) -> None:
    assert api.get(f"/api/instances/{iid}").status_code == 404
    assert not (settings.data_dir / "instances" / iid).exists()

    async def row() -> tuple[Instance | None, list[str]]:
        db = Database(settings.resolved_database_url)
        async with db.session() as session:
            inst = await session.get(Instance, iid)
            events = await session.scalars(
                select(InstanceEvent.to_status)
                .where(InstanceEvent.instance_id == iid)
                .order_by(InstanceEvent.id)
            )
            statuses = list(events)
        await db.close()
        return inst, statuses

    inst, statuses = asyncio.run(row())
    assert inst is not None and inst.status == "destroyed" and inst.destroyed_at is not None
    assert statuses[-2:] == ["destroying", "destroyed"]
    assert "error" not in statuses


@pytest.mark.parametrize("during", ["provisioning", "starting"])
def test_delete_during_create(api: httpx.Client, settings: Settings, during: str) -> None:
    create = _in_background(lambda: api.post("/api/instances", json=SHELL))
    iid = _wait_for_status(api, {during, "running"})
    started = time.monotonic()
    deleted = api.delete(f"/api/instances/{iid}")
    assert deleted.status_code == 200, deleted.text
    assert time.monotonic() - started < 30
    created = create()
    # The create either finished first or was cancelled; either way, never a 5xx.
    assert created.status_code in (200, 409), created.text
    if created.status_code == 409:
        assert "destroyed" in created.json()["error"]
    _assert_gone(api, settings, iid)


@pytest.mark.parametrize("action", ["start", "restart"])
def test_delete_during_an_action(api: httpx.Client, settings: Settings, action: str) -> None:
    iid = create_shell(api)["id"]
    if action == "start":
        assert api.post(f"/api/instances/{iid}/action", json={"action": "stop"}).status_code == 200
    acting = _in_background(
        lambda: api.post(f"/api/instances/{iid}/action", json={"action": action})
    )
    _wait_for_status(api, {"starting", "restarting"}, iid)
    deleted = api.delete(f"/api/instances/{iid}")
    assert deleted.status_code == 200, deleted.text
    assert acting().status_code in (200, 409)
    _assert_gone(api, settings, iid)


def test_two_deletes_both_succeed(api: httpx.Client, settings: Settings) -> None:
    iid = create_shell(api)["id"]
    first = _in_background(lambda: api.delete(f"/api/instances/{iid}"))
    second = api.delete(f"/api/instances/{iid}")
    assert {first().status_code, second.status_code} <= {200, 404}
    _assert_gone(api, settings, iid)
