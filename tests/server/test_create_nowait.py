"""``POST /api/instances?wait=0``: answered 202 as soon as the instance exists, while its start
goes on in the server; without it the create still blocks until the instance runs."""

from __future__ import annotations

import httpx

from tests.waiting import wait_until_blocking

SHELL = {"agentType": "shell", "modelProvider": "none", "modelName": "bash"}


def test_a_create_that_does_not_wait_answers_at_once_and_the_start_goes_on(
    bearer: httpx.Client,
) -> None:
    created = bearer.post("/api/instances", params={"wait": "0"}, json=SHELL)
    assert created.status_code == 202, created.text
    body = created.json()
    assert set(body) == {"id", "subdomain", "status"}
    assert body["status"] == "provisioning"
    iid = body["id"]
    try:
        wait_until_blocking(
            lambda: bearer.get(f"/api/instances/{iid}").json()["status"] == "running",
            "the instance runs",
            timeout=60,
        )
        events = bearer.get(f"/api/instances/{iid}/events").json()["events"]
        assert [e["to"] for e in reversed(events)] == ["provisioning", "starting", "running"]
    finally:
        bearer.delete(f"/api/instances/{iid}", timeout=60)


def test_a_retried_create_that_did_not_wait_gets_the_same_instance(bearer: httpx.Client) -> None:
    headers = {"Idempotency-Key": "no-wait-retry-1"}
    first = bearer.post("/api/instances", params={"wait": "false"}, json=SHELL, headers=headers)
    again = bearer.post("/api/instances", params={"wait": "false"}, json=SHELL, headers=headers)
    assert first.status_code == again.status_code == 202, (first.text, again.text)
    assert again.json()["id"] == first.json()["id"]
    assert len(bearer.get("/api/instances").json()["instances"]) == 1
    bearer.delete(f"/api/instances/{first.json()['id']}", timeout=60)


def test_wait_takes_a_flag(bearer: httpx.Client) -> None:
    answer = bearer.post("/api/instances", params={"wait": "soon"}, json=SHELL)
    assert answer.status_code == 400
    assert answer.json() == {"error": "wait: must be 1 or 0"}
    assert bearer.get("/api/instances").json()["instances"] == []
