"""Hostile input at the HTTP edges: 400s and 401s in the usual body, never a 500 or a dropped
connection; forwarding headers from nobody but a listed proxy; sign-in limits that cannot lock
an owner out; no secret in any log line; the security headers."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable

import httpx
import pytest
import uvicorn
from websockets.exceptions import InvalidStatus

from gentity.cli import serve as serve_command
from gentity.settings import Settings
from tests.conftest import PASSWORD, LiveServer, signup
from tests.server.terminal_client import Terminal, ws_url
from tests.server.test_instances import create_shell

BAD_NUMBERS = ["١٢", "²", "1" * 30, "9" * 5000]


def assert_error(response: httpx.Response, status: int) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and body["error"]


def test_authentication_comes_before_the_body(server: LiveServer) -> None:
    with httpx.Client(base_url=server.url) as c:
        for auth in ({}, {"Authorization": "Bearer gn_live_forged"}):
            for method, path in (
                ("POST", "/api/tokens"),
                ("POST", "/api/instances"),
                ("POST", "/api/instances/c000/action"),
            ):
                answer = c.request(
                    method,
                    path,
                    content=b"{nope",
                    headers={"content-type": "application/json", **auth},
                )
                assert_error(answer, 401)


def test_numbers_are_ascii_digits_in_range(bearer: httpx.Client, token: str) -> None:
    iid = create_shell(bearer)["id"]
    logs = f"/api/instances/{iid}/logs"
    for bad in BAD_NUMBERS:
        assert_error(bearer.get(logs, params={"lines": bad}), 400)
        assert_error(bearer.get(logs, params={"follow": "1", "cursor": bad}), 400)
        with bearer.stream(
            "GET", logs, params={"follow": "1"}, headers=[(b"Last-Event-ID", bad.encode())]
        ) as answer:
            answer.read()
            assert_error(answer, 400)

    async def terminals() -> None:
        for name in ("cols", "rows"):
            for bad in ("²", "١٢", "0", "99999999999999999999999"):
                with pytest.raises(InvalidStatus) as refused:
                    await Terminal.open(ws_url(bearer_url, iid, token, f"{name}={bad}"))
                assert refused.value.response.status_code == 400, (name, bad)
        # In an open terminal, an absurd resize is ignored and the session goes on.
        term = await Terminal.open(ws_url(bearer_url, iid, token, "cols=100&rows=30"))
        await term.resize(10**40, 10**40)
        await term.send("echo still-$((1+1))\r")
        await term.expect("still-2")
        await term.close()

    bearer_url = str(bearer.base_url).rstrip("/")
    asyncio.run(terminals())
    # The server is still well.
    assert bearer.get("/healthz").status_code == 200
    bearer.delete(f"/api/instances/{iid}")


def test_dates_and_names_are_validated(bearer: httpx.Client) -> None:
    far = bearer.post("/api/tokens", json={"name": "far", "expiresAt": "9999-12-31T23:59:59-14:00"})
    assert_error(far, 400)
    assert "expiresAt" in far.json()["error"]
    for name in ("nul\x00name", "bell\x07", "line\nbreak", "esc\x1b[31m", "rtl\u202eevil"):
        assert_error(bearer.post("/api/tokens", json={"name": name}), 400)
        made = bearer.post(
            "/api/instances",
            json={"name": name, "agentType": "shell", "modelProvider": "none", "modelName": "bash"},
        )
        assert_error(made, 400)
        assert "name" in made.json()["error"]
    assert bearer.get("/api/instances").json()["instances"] == []


def test_forwarding_headers_are_believed_from_listed_proxies_only(
    server_factory: Callable[[Settings], LiveServer],
    settings_factory: Callable[..., Settings],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Nobody listed: a client on 127.0.0.1 cannot pick its scheme or its address.
    server = server_factory(settings_factory(login_max_failures_per_address=2))
    with httpx.Client(base_url=server.url) as c:
        signup(c, "admin@example.com")
        spoof = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.9"}
        login = {"email": "admin@example.com", "password": PASSWORD}
        cookie = c.post("/api/auth/login", json=login, headers=spoof).headers["set-cookie"]
        assert cookie.startswith("gentity_session=") and "Secure" not in cookie
        for i in range(2):
            bad = {"email": f"x{i}@example.com", "password": "wrong guess"}
            c.post("/api/auth/login", json=bad, headers={"X-Forwarded-For": f"203.0.113.{i}"})
        # Both failures counted against the real address, whatever the header said.
        assert c.post("/api/auth/login", json=login, headers=spoof).status_code == 429

    # `gentity serve` does not let uvicorn believe them either.
    seen: list[uvicorn.Config] = []

    def run(self: uvicorn.Server, sockets: list[socket.socket] | None = None) -> None:
        seen.append(self.config)
        for listener in sockets or []:
            listener.close()

    monkeypatch.setattr(uvicorn.Server, "run", run)
    monkeypatch.setenv("GENTITY_DATA_DIR", str(settings_factory().data_dir))
    with socket.socket() as probe:  # a free port, for `serve` to take (and the fake run to close)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    serve_command.serve(host="127.0.0.1", port=port)
    (config,) = seen
    assert config.proxy_headers is False


def test_failed_sign_ins_slow_the_account_without_locking_its_owner_out(
    server_factory: Callable[[Settings], LiveServer], settings_factory: Callable[..., Settings]
) -> None:
    server = server_factory(
        settings_factory(login_max_failures_per_account=3, trusted_proxies="127.0.0.1")
    )
    attacker = {"X-Forwarded-For": "198.51.100.66"}
    owner = {"X-Forwarded-For": "192.0.2.10"}
    with httpx.Client(base_url=server.url, timeout=60) as c:
        signup(c, "victim@example.com")
        c.cookies.clear()
        bad = {"email": "victim@example.com", "password": "guess guess"}
        codes = [
            c.post("/api/auth/login", json=bad, headers=attacker).status_code for _ in range(4)
        ]
        # The (account, address) pair is throttled...
        assert codes == [401, 401, 401, 429]
        good = {"email": "victim@example.com", "password": PASSWORD}
        assert c.post("/api/auth/login", json=good, headers=attacker).status_code == 429
        # ...but the owner, from elsewhere, still signs in.
        assert c.post("/api/auth/login", json=good, headers=owner).status_code == 200


def test_tokens_and_handoff_codes_are_masked_in_every_log(
    bearer: httpx.Client, token: str, caplog: pytest.LogCaptureFixture
) -> None:
    for name in ("", "uvicorn.access", "uvicorn.error"):
        caplog.set_level(logging.INFO, logger=name)
    spellings = [
        f"/healthz?%74oken={token}",
        f"/healthz?tok%65n={token}",
        f"/healthz/{token}",
        f"/healthz?x={token}",
        f"/healthz?x=gn%5Flive%5F{token[8:]}",
        "/healthz?handoff=c2VjcmV0LWhhbmRvZmYtY29kZQ",
    ]
    for path in spellings:
        bearer.get(path)
    # A child logger of gentity, as the app's own modules use.
    logging.getLogger("gentity.server.some.module").warning("opened %s", f"/x?token={token}")
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "/healthz" in text
    assert token[8:20] not in text
    assert "c2VjcmV0LWhhbmRvZmYtY29kZQ" not in text


def test_security_headers_and_no_cdn_docs(
    server_factory: Callable[[Settings], LiveServer], settings_factory: Callable[..., Settings]
) -> None:
    server = server_factory(settings_factory(public_url="https://gentity.example.com"))
    with httpx.Client(base_url=server.url) as c:
        signup(c, "admin@example.com")
        cookie = c.post(
            "/api/auth/login", json={"email": "admin@example.com", "password": PASSWORD}
        ).headers["set-cookie"]
        # The public URL is https: the cookie is Secure even though this hop is plain http.
        assert cookie.startswith("__Host-gentity_session=") and "Secure" in cookie
        for path in ("/api/auth/status", "/api/catalog/agents", "/api/nowhere", "/healthz"):
            answer = c.get(path)
            assert answer.headers["x-content-type-options"] == "nosniff", path
            assert answer.headers["strict-transport-security"].startswith("max-age="), path
        assert c.get("/api/auth/status").headers["cache-control"] == "no-store"
        docs = c.get("/api/docs")
        assert "cdn." not in docs.text and "https://" not in docs.text
