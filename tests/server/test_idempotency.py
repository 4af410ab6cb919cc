"""Idempotency-Key on POST /api/instances and actions: a retry gets the first answer."""

from __future__ import annotations

import httpx

from tests.server.test_instances import SHELL


def test_create_with_a_key_makes_one_instance(
    bearer: httpx.Client, other_user: httpx.Client
) -> None:
    key = {"Idempotency-Key": "create-7f3a"}
    first = bearer.post("/api/instances", json=SHELL, headers=key)
    assert first.status_code == 200, first.text
    again = bearer.post("/api/instances", json=SHELL, headers=key)
    assert again.status_code == 200 and again.json() == first.json()
    assert [i["id"] for i in bearer.get("/api/instances").json()["instances"]] == [
        first.json()["id"]
    ]
    # Another request under the same key is refused; another user's key is their own.
    other_body = bearer.post("/api/instances", json={**SHELL, "name": "x"}, headers=key)
    assert other_body.status_code == 422 and set(other_body.json()) == {"error"}
    theirs = other_user.post("/api/instances", json=SHELL, headers=key)
    assert theirs.status_code == 200 and theirs.json()["id"] != first.json()["id"]
    assert other_user.delete(f"/api/instances/{theirs.json()['id']}").status_code == 200

    iid = first.json()["id"]
    stop = {"Idempotency-Key": "stop-1"}
    for _ in range(2):  # the retry is answered as the first was, not 409 "already stopped"
        response = bearer.post(
            f"/api/instances/{iid}/action", json={"action": "stop"}, headers=stop
        )
        assert response.status_code == 200 and response.json() == {"ok": True}
    plain = bearer.post(f"/api/instances/{iid}/action", json={"action": "stop"})
    assert plain.status_code == 409
    assert bearer.delete(f"/api/instances/{iid}").status_code == 200


def test_keys_are_checked_and_errors_replayed(bearer: httpx.Client) -> None:
    for bad in ("", "a b", "x" * 256):
        response = bearer.post("/api/instances", json=SHELL, headers={"Idempotency-Key": bad})
        assert response.status_code == 400 and "Idempotency-Key" in response.json()["error"]
    unknown = {**SHELL, "agentType": "nope"}
    key = {"Idempotency-Key": "bad-agent"}
    first = bearer.post("/api/instances", json=unknown, headers=key)
    assert first.status_code == 400
    assert bearer.post("/api/instances", json=unknown, headers=key).json() == first.json()
    assert bearer.get("/api/instances").json()["instances"] == []
