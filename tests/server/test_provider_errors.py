"""A provider's failure is an upstream failure: 502 with the provider's own message, on every
route that reaches the provider; a machine this server cannot act on is a 503 that records
nothing."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from sqlalchemy import update
from websockets.exceptions import InvalidStatus

from gentity.providers.compute.base import ComputeProvider, ProviderError
from gentity.server.db.database import Database
from gentity.server.db.orm import Instance
from gentity.settings import Settings
from tests.conftest import LiveServer
from tests.server.terminal_client import Terminal, ws_url
from tests.server.test_instances import SHELL, create_shell


@contextmanager
def failing(
    monkeypatch: pytest.MonkeyPatch, provider: ComputeProvider, method: str
) -> Iterator[str]:
    """While inside, ``provider.<method>`` raises a ProviderError; yields its message."""
    message = f"the cloud refused to {method} (quota exceeded)"

    def refuse(*_: Any, **__: Any) -> Any:
        raise ProviderError(message)

    async def refuse_async(*_: Any, **__: Any) -> Any:
        raise ProviderError(message)

    with monkeypatch.context() as patch:
        patch.setattr(provider, method, refuse if method == "guest_endpoint" else refuse_async)
        yield message


def assert_upstream_failure(response: httpx.Response, message: str) -> None:
    assert response.status_code == 502, response.text
    assert response.json() == {"error": message}


def test_provider_errors_answer_502_with_their_message(
    server: LiveServer, bearer: httpx.Client, token: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    provider: ComputeProvider = server.app.state.ctx.providers.default

    with failing(monkeypatch, provider, "create") as message:
        assert_upstream_failure(bearer.post("/api/instances", json=SHELL), message)
    # The failed create left a row in error; delete it with the provider working.
    (failed,) = bearer.get("/api/instances").json()["instances"]
    assert failed["status"] == "error" and failed["errorMessage"] == message
    assert bearer.delete(f"/api/instances/{failed['id']}").status_code == 200

    iid = create_shell(bearer)["id"]
    logs = f"/api/instances/{iid}/logs"
    # A running instance's log comes through its guest, found through the provider.
    with failing(monkeypatch, provider, "guest_endpoint") as message:
        assert_upstream_failure(bearer.get(logs), message)
        assert_upstream_failure(bearer.get(logs, params={"follow": "1"}), message)

    async def terminal_refusal() -> tuple[int, Any]:
        with pytest.raises(InvalidStatus) as refused:
            await Terminal.open(ws_url(server.url, iid, token))
        answer = refused.value.response
        return answer.status_code, json.loads(answer.body or b"null")

    with failing(monkeypatch, provider, "guest_endpoint") as message:
        assert asyncio.run(terminal_refusal()) == (502, {"error": message})

    def act(action: str) -> httpx.Response:
        return bearer.post(f"/api/instances/{iid}/action", json={"action": action})

    with failing(monkeypatch, provider, "stop") as message:
        assert_upstream_failure(act("stop"), message)
    # Not running now (in error): its log comes from the provider.
    with failing(monkeypatch, provider, "tail_stopped") as message:
        assert_upstream_failure(bearer.get(logs), message)
    # Each failure leaves the instance in error, from which start and restart are allowed.
    with failing(monkeypatch, provider, "start") as message:
        assert_upstream_failure(act("start"), message)
    with failing(monkeypatch, provider, "restart") as message:
        assert_upstream_failure(act("restart"), message)
    assert bearer.get(f"/api/instances/{iid}").json()["errorMessage"] == message

    with failing(monkeypatch, provider, "destroy") as message:
        assert_upstream_failure(bearer.delete(f"/api/instances/{iid}"), message)
    assert bearer.get(f"/api/instances/{iid}").json()["status"] == "destroying"
    # The next DELETE, with the provider back, finishes the job.
    assert bearer.delete(f"/api/instances/{iid}").json() == {"ok": True}


@pytest.mark.local_only  # rows of the local provider on a server that runs another
def test_an_instance_of_a_provider_this_server_does_not_run_is_left_alone(
    bearer: httpx.Client, settings: Settings
) -> None:
    iid = create_shell(bearer)["id"]

    async def set_provider(name: str) -> None:
        db = Database(settings.resolved_database_url)
        async with db.session() as session:
            await session.execute(update(Instance).where(Instance.id == iid).values(provider=name))
            await session.commit()
        await db.close()

    asyncio.run(set_provider("elsewhere"))
    try:
        refusals = [
            bearer.post(f"/api/instances/{iid}/action", json={"action": "stop"}),
            bearer.get(f"/api/instances/{iid}/logs"),
            bearer.delete(f"/api/instances/{iid}"),
        ]
        for answer in refusals:
            assert answer.status_code == 503, answer.text
            assert "does not run the 'elsewhere' compute provider" in answer.json()["error"]
        # Nothing happened to the machine, so nothing is recorded on the row.
        seen = bearer.get(f"/api/instances/{iid}").json()
        assert (seen["status"], seen["errorMessage"]) == ("running", None)
    finally:
        asyncio.run(set_provider("local"))
    assert bearer.delete(f"/api/instances/{iid}").json() == {"ok": True}
