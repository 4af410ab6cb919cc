"""The instances API on the local provider: lifecycle, validation, ownership, events."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from gentity.server.db.database import Database
from gentity.server.db.orm import Instance, InstanceEvent
from gentity.settings import Settings
from tests.json_body import json_object
from tests.server.terminal_client import Terminal, ws_url

SHELL = {"agentType": "shell", "modelProvider": "none", "modelName": "bash"}


def create_shell(client: httpx.Client, **extra: object) -> dict[str, Any]:
    response = client.post("/api/instances", json={**SHELL, **extra})
    assert response.status_code == 200, response.text
    return json_object(response.json())


def instance_dir(settings: Settings, instance_id: str) -> Path:
    return settings.data_dir / "instances" / instance_id


@pytest.mark.local_only  # looks at the volume on this host; tests/fly/test_server.py does fly's
def test_shell_instance_lifecycle(bearer: httpx.Client, settings: Settings, token: str) -> None:
    created = create_shell(bearer)
    assert set(created) == {"id", "subdomain", "status"}
    assert created["status"] == "running"
    assert re.fullmatch(r"sh-[a-z0-9]{6}", created["subdomain"])
    iid = created["id"]

    listed = bearer.get("/api/instances").json()["instances"]
    assert [i["id"] for i in listed] == [iid]
    one = bearer.get(f"/api/instances/{iid}").json()
    # The agent's health may move on (starting -> ready) between the two calls.
    assert {**one, "agent": None} == {**listed[0], "agent": None}
    assert one["agent"]["state"] in ("starting", "ready")
    assert one["name"] == "Shell - bash"
    assert one["errorMessage"] is None
    assert {"createdAt", "updatedAt", "agentType", "modelProvider", "modelName"} <= set(one)

    async def write_file() -> None:
        term = await Terminal.open(ws_url(str(bearer.base_url), iid, token))
        await term.send("echo persisted > notes.txt; echo ok-$((40+2))\r")
        await term.expect("ok-42")
        await term.close()

    asyncio.run(write_file())

    def act(action: str) -> httpx.Response:
        return bearer.post(f"/api/instances/{iid}/action", json={"action": action})

    # Each operation gives the row up with its last write (see operations.settle).
    assert _owner(settings, iid) is None
    assert act("stop").json() == {"ok": True}
    assert bearer.get(f"/api/instances/{iid}").json()["status"] == "stopped"
    assert _owner(settings, iid) is None
    second = act("stop")
    assert second.status_code == 409
    assert "stopped" in second.json()["error"]
    assert act("start").json() == {"ok": True}
    assert bearer.get(f"/api/instances/{iid}").json()["status"] == "running"
    volume = instance_dir(settings, iid) / "disk" / "home"
    assert (volume / "work" / "notes.txt").read_text() == "persisted\n"  # where agents start
    assert act("restart").json() == {"ok": True}
    assert bearer.get(f"/api/instances/{iid}").json()["status"] == "running"
    assert _owner(settings, iid) is None

    statuses = _events(settings, iid)
    assert statuses == [
        (None, "provisioning"),
        ("provisioning", "starting"),
        ("starting", "running"),
        ("running", "stopping"),
        ("stopping", "stopped"),
        ("stopped", "starting"),
        ("starting", "running"),
        ("running", "restarting"),
        ("restarting", "running"),
    ]

    assert bearer.delete(f"/api/instances/{iid}").json() == {"ok": True}
    assert bearer.get(f"/api/instances/{iid}").status_code == 404
    assert bearer.get("/api/instances").json() == {"instances": []}
    assert not instance_dir(settings, iid).exists()
    assert _guest_processes(iid) == []
    assert bearer.delete(f"/api/instances/{iid}").status_code == 404


def _events(settings: Settings, iid: str) -> list[tuple[str | None, str]]:
    async def load() -> list[tuple[str | None, str]]:
        db = Database(settings.resolved_database_url)
        async with db.session() as s:
            rows = await s.scalars(
                select(InstanceEvent)
                .where(InstanceEvent.instance_id == iid)
                .order_by(InstanceEvent.id)
            )
            result = [(r.from_status, r.to_status) for r in rows]
            assert all(r.reason for r in await s.scalars(select(InstanceEvent)))
        await db.close()
        return result

    return asyncio.run(load())


def _owner(settings: Settings, iid: str) -> str | None:
    async def load() -> str | None:
        db = Database(settings.resolved_database_url)
        async with db.session() as s:
            owner = await s.scalar(select(Instance.operation_owner).where(Instance.id == iid))
        await db.close()
        return owner

    return asyncio.run(load())


def _guest_processes(iid: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if iid.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({**SHELL, "agentType": "vim"}, "agentType"),
        ({**SHELL, "modelName": "gpt-5"}, "modelName"),
        (
            {
                "agentType": "claude-code",
                "modelProvider": "anthropic",
                "modelName": "claude-sonnet-4-5",
            },
            "apiKey",
        ),
        (
            {
                "agentType": "claude-code",
                "modelProvider": "anthropic",
                "modelName": "claude-sonnet-4-5",
                "apiKey": "  ",
            },
            "apiKey",
        ),
        ({**SHELL, "colour": "red"}, "colour"),
        ({**SHELL, "name": 7}, "name"),
        ({**SHELL, "agentType": None}, "agentType"),
        ({"modelProvider": "none", "modelName": "bash"}, "agentType"),
        ({**SHELL, "name": "x" * 201}, "name"),
        ({**SHELL, "restartPolicy": "sometimes"}, "restartPolicy"),
        ({**SHELL, "restartPolicy": None}, "restartPolicy"),
        # The local provider has one region, this host; the error names the one asked for.
        pytest.param(
            {**SHELL, "region": "iad"},
            "unknown region 'iad' (choose one of: local)",
            marks=pytest.mark.local_only,
        ),
    ],
)
def test_create_validation(bearer: httpx.Client, body: dict[str, Any], fragment: str) -> None:
    response = bearer.post("/api/instances", json=body)
    assert response.status_code == 400
    assert fragment in response.json()["error"]
    assert bearer.get("/api/instances").json() == {"instances": []}


def test_bad_actions(bearer: httpx.Client) -> None:
    iid = create_shell(bearer, name="my box")["id"]
    assert bearer.get(f"/api/instances/{iid}").json()["name"] == "my box"
    for body, status in (
        ({"action": "explode"}, 400),
        ({}, 400),
        ({"action": "stop", "force": True}, 400),
    ):
        response = bearer.post(f"/api/instances/{iid}/action", json=body)
        assert response.status_code == status
        assert "action" in response.json()["error"] or "force" in response.json()["error"]
    assert bearer.post(f"/api/instances/{iid}/action", json={"action": "start"}).status_code == 409
    bearer.delete(f"/api/instances/{iid}")


def test_another_users_instance_is_not_found_everywhere(
    bearer: httpx.Client, other_user: httpx.Client, server: object
) -> None:
    iid = create_shell(bearer)["id"]
    missing = "c" + "0" * 24
    for target in (iid, missing):
        responses = [
            other_user.get(f"/api/instances/{target}"),
            other_user.delete(f"/api/instances/{target}"),
            other_user.post(f"/api/instances/{target}/action", json={"action": "stop"}),
            other_user.get(f"/api/instances/{target}/logs"),
            other_user.get(f"/api/instances/{target}/logs", params={"follow": "1"}),
        ]
        for response in responses:
            assert response.status_code == 404, response.request.url
            assert response.json() == {"error": "Not Found"}
    other_token = other_user.headers["Authorization"].split()[1]

    async def attach() -> None:
        from websockets.exceptions import InvalidStatus

        with pytest.raises(InvalidStatus) as refused:
            await Terminal.open(ws_url(str(other_user.base_url), iid, other_token))
        assert refused.value.response.status_code == 404
        assert refused.value.response.body == b'{"error":"Not Found"}'

    asyncio.run(attach())
    assert bearer.get(f"/api/instances/{iid}").json()["status"] == "running"
    assert other_user.get("/api/instances").json() == {"instances": []}
    bearer.delete(f"/api/instances/{iid}")
