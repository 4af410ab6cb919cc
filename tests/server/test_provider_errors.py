"""A provider's failure is an upstream failure: 502 with the provider's own message, on every
route that reaches the provider."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from websockets.exceptions import InvalidStatus

from gentity.providers.compute.base import ComputeProvider, ProviderError
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
        patch.setattr(provider, method, refuse if method == "guest_address" else refuse_async)
        yield message


def assert_upstream_failure(response: httpx.Response, message: str) -> None:
    assert response.status_code == 502, response.text
    assert response.json() == {"error": message}


def test_provider_errors_answer_502_with_their_message(
    server: LiveServer, bearer: httpx.Client, token: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    provider: ComputeProvider = server.app.state.ctx.compute

    with failing(monkeypatch, provider, "create") as message:
        assert_upstream_failure(bearer.post("/api/instances", json=SHELL), message)
    # The failed create left a row in error; delete it with the provider working.
    (failed,) = bearer.get("/api/instances").json()["instances"]
    assert failed["status"] == "error" and failed["errorMessage"] == message
    assert bearer.delete(f"/api/instances/{failed['id']}").status_code == 200

    iid = create_shell(bearer)["id"]
    logs = f"/api/instances/{iid}/logs"
    with failing(monkeypatch, provider, "tail_logs") as message:
        assert_upstream_failure(bearer.get(logs), message)
    with failing(monkeypatch, provider, "log_cursor_before") as message:
        assert_upstream_failure(bearer.get(logs, params={"follow": "1"}), message)

    async def terminal_refusal() -> tuple[int, Any]:
        with pytest.raises(InvalidStatus) as refused:
            await Terminal.open(ws_url(server.url, iid, token))
        answer = refused.value.response
        return answer.status_code, json.loads(answer.body or b"null")

    with failing(monkeypatch, provider, "guest_address") as message:
        assert asyncio.run(terminal_refusal()) == (502, {"error": message})

    def act(action: str) -> httpx.Response:
        return bearer.post(f"/api/instances/{iid}/action", json={"action": action})

    with failing(monkeypatch, provider, "stop") as message:
        assert_upstream_failure(act("stop"), message)
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
