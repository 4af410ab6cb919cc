"""Preview URLs: ``<port>-<subdomain>.<host>`` reaches a server inside a real instance, over
HTTP and WebSocket, for its owner only unless the port is public; Gentity's credentials never
reach the instance, and the instance cannot set cookies beyond its own host."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from gentity.settings import Settings
from tests.conftest import LiveServer, mint_token, signup
from tests.server.terminal_client import Terminal, ws_url
from tests.server.test_instances import create_shell
from tests.waiting import wait_until_blocking

APP = (Path(__file__).parent / "preview_app.py").read_bytes()
SITE_PORT, APP_PORT = 8000, 8001
BIG = 24 * 1024 * 1024


async def _start_servers(base: str, iid: str, token: str) -> str:
    """``python3 -m http.server`` and the test app, started in the agent's terminal (the
    agent is a shell, whose jobs live as long as the instance runs)."""
    term = await Terminal.open(ws_url(base, iid, token))
    encoded = base64.b64encode(APP).decode()
    await term.send("mkdir -p $HOME/site && echo hello-preview > $HOME/site/index.txt\r")
    # A download larger than any buffer on the way, and its digest as the instance sees it.
    await term.send(
        f"head -c {BIG} /dev/urandom > $HOME/site/big.bin"
        " && echo digest-$(sha256sum < $HOME/site/big.bin | cut -c1-64)-end\r"
    )
    for start in range(0, len(encoded), 1000):  # terminal lines are limited to 4 KiB
        await term.send(f"printf %s '{encoded[start : start + 1000]}' >> $HOME/app.b64\r")
    await term.send(
        f"base64 -d $HOME/app.b64 > $HOME/app.py && echo decoded-$((1+1))"
        f" && (python3 -m http.server {SITE_PORT} -d $HOME/site >/dev/null 2>&1 &)"
        f" && (python3 $HOME/app.py {APP_PORT} >/dev/null 2>&1 &)\r"
    )
    try:
        await term.expect("decoded-2", timeout=20)
    except TimeoutError:
        raise AssertionError(f"starting the servers failed: {term.output[-2000:]!r}") from None
    await term.close()
    found = re.search(r"digest-([0-9a-f]{64})-end", term.output)
    assert found is not None, term.output[-2000:]
    return found[1]


def _preview(server: LiveServer, host: str, **headers: str) -> httpx.Client:
    """A client of the server whose requests name ``host`` (as a browser resolving
    ``*.localhost`` would)."""
    return httpx.Client(base_url=server.url, headers={"Host": host, **headers}, timeout=30)


def _host(port: int, sub: str, server: LiveServer) -> str:
    return f"{port}-{sub}.localhost:{server.port}"


def _seen(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


@pytest.fixture
def previewed(bearer: httpx.Client, token: str) -> dict[str, Any]:
    """A running shell instance with both servers listening."""
    created = create_shell(bearer)
    created["digest"] = asyncio.run(_start_servers(str(bearer.base_url), created["id"], token))

    def listening() -> bool:
        answer = bearer.get(f"/api/instances/{created['id']}/ports")
        return {SITE_PORT, APP_PORT} <= {p["port"] for p in answer.json()["ports"]}

    wait_until_blocking(listening, "both servers listening in the instance", timeout=30)
    return created


def test_ports_listing_and_owner_only_previews(
    server: LiveServer,
    bearer: httpx.Client,
    token: str,
    other_user: httpx.Client,
    previewed: dict[str, Any],
) -> None:
    iid, sub = previewed["id"], previewed["subdomain"]
    listed = bearer.get(f"/api/instances/{iid}/ports").json()["ports"]
    site = next(p for p in listed if p["port"] == SITE_PORT)
    assert site == {
        "port": SITE_PORT,
        "url": f"http://{SITE_PORT}-{sub}.localhost:{server.port}/",
        "public": False,
    }
    assert [p["port"] for p in listed] == sorted(p["port"] for p in listed)
    host = _host(SITE_PORT, sub, server)

    # The owner's API token gets through; the page is python3 -m http.server's.
    with _preview(server, host, Authorization=f"Bearer {token}") as owner:
        answer = owner.get("/index.txt")
        assert answer.status_code == 200 and answer.text == "hello-preview\n"
        assert "SimpleHTTP" in answer.headers["server"]
        # A large download streams through whole.
        digest, size = hashlib.sha256(), 0
        with owner.stream("GET", "/big.bin") as download:
            assert download.status_code == 200
            for chunk in download.iter_bytes():
                digest.update(chunk)
                size += len(chunk)
        assert (size, digest.hexdigest()) == (BIG, previewed["digest"])
        head = owner.head("/big.bin")
        assert head.status_code == 200 and head.headers["content-length"] == str(BIG)

    # Nobody else does: no credential is a 401 (a browser is sent to sign in), another
    # user's token the same 404 as an instance that does not exist.
    with _preview(server, host) as anonymous:
        refused = anonymous.get("/index.txt")
        assert refused.status_code == 401 and "error" in refused.json()
        browser = anonymous.get("/index.txt?x=1", headers={"Accept": "text/html"})
        assert browser.status_code == 303
        assert browser.headers["location"] == (
            f"http://127.0.0.1:{server.port}/dashboard/preview/{sub}/{SITE_PORT}"
            "?next=/index.txt%3Fx%3D1"
        )
    other = other_user.headers["Authorization"]
    with _preview(server, host, Authorization=other) as stranger:
        assert stranger.get("/index.txt").status_code == 404
    assert other_user.get(f"/api/instances/{iid}/ports").status_code == 404
    made_by_other = other_user.put(f"/api/instances/{iid}/ports/8000", json={"public": True})
    assert made_by_other.status_code == 404
    nosuch = _host(SITE_PORT, "sh-nosuch", server)
    with _preview(server, nosuch, Authorization=f"Bearer {token}") as c:
        assert c.get("/").status_code == 404

    # Made public, anyone gets through; made private again, nobody.
    made = bearer.put(f"/api/instances/{iid}/ports/{SITE_PORT}", json={"public": True})
    assert made.status_code == 200 and made.json() == {**site, "public": True}
    with _preview(server, host) as anonymous:
        assert anonymous.get("/index.txt").text == "hello-preview\n"
        listed = bearer.get(f"/api/instances/{iid}/ports").json()["ports"]
        assert {p["port"]: p["public"] for p in listed}[SITE_PORT] is True
        assert {p["port"]: p["public"] for p in listed}[APP_PORT] is False
        bearer.put(f"/api/instances/{iid}/ports/{SITE_PORT}", json={"public": False})
        assert anonymous.get("/index.txt").status_code == 401

    # Bad ports are a 400; nothing listening is a 502 that says so.
    for bad in ("0", "65536", "http", "-1"):
        answer = bearer.put(f"/api/instances/{iid}/ports/{bad}", json={"public": True})
        assert answer.status_code == 400, bad
    with _preview(server, _host(9, sub, server), Authorization=f"Bearer {token}") as c:
        answer = c.get("/")
        assert answer.status_code == 502
        assert answer.json() == {"error": "nothing accepts connections on port 9"}

    # Only a running instance lists its ports.
    assert bearer.post(f"/api/instances/{iid}/action", json={"action": "stop"}).status_code == 200
    stopped = bearer.get(f"/api/instances/{iid}/ports")
    assert stopped.status_code == 409 and "stopped" in stopped.json()["error"]
    with _preview(server, host, Authorization=f"Bearer {token}") as owner:
        assert owner.get("/").status_code == 409
        # A browser gets a page of ours, with nothing loaded from the host (whose paths are
        # all the instance's).
        page = owner.get("/", headers={"Accept": "text/html"})
        assert page.status_code == 409 and page.headers["content-type"].startswith("text/html")
        assert "stopped" in page.text and "/static/" not in page.text
        assert page.headers["content-security-policy"].startswith("default-src 'none'")


def test_credentials_never_reach_the_instance_nor_its_cookies_ours(
    server: LiveServer,
    admin: httpx.Client,
    bearer: httpx.Client,
    token: str,
    previewed: dict[str, Any],
) -> None:
    sub = previewed["subdomain"]
    host = _host(APP_PORT, sub, server)
    main_session = admin.cookies["gentity_session"]

    # With the API token: neither it nor a Gentity cookie is passed on; the app's own are.
    with _preview(server, host, Authorization=f"Bearer {token}") as owner:
        owner.cookies.set("gentity_session", main_session)
        owner.cookies.set("mine", "1")
        seen = _seen(owner.get("/headers?q=1"))
        assert seen["path"] == "/headers?q=1"
        headers = dict(seen["headers"])
        assert "authorization" not in headers
        assert headers["cookie"] == "mine=1"
        assert headers["host"] == host
        assert headers["x-forwarded-host"] == host
        assert headers["x-forwarded-proto"] == "http"
        assert headers["x-forwarded-for"] == "127.0.0.1"
        assert token not in json.dumps(seen) and main_session not in json.dumps(seen)

        # The app may set cookies for its own host only, and none named like ours.
        cookies = owner.get("/cookie").headers.get_list("set-cookie")
        assert cookies == ["wide=1; Path=/", "own=2; Path=/"]

        # Bodies stream both ways: a large upload arrives whole.
        upload = os.urandom(8 * 1024 * 1024)
        answer = _seen(owner.post("/upload", content=upload))
        whole = {"length": len(upload), "sha256": hashlib.sha256(upload).hexdigest()}
        assert answer == {**whole, "chunked": False}
        # Without a length (chunked), it arrives whole too.
        pieces = (upload[i : i + 100_000] for i in range(0, len(upload), 100_000))
        assert _seen(owner.post("/upload", content=pieces)) == {**whole, "chunked": True}

    # The dashboard's hand-off: signed in on the main host, the owner gets a cookie of the
    # preview host (never the dashboard's), then the page asked for.
    start = admin.get(f"/dashboard/preview/{sub}/{APP_PORT}", params={"next": "/headers?from=1"})
    assert start.status_code == 303
    where = urlsplit(start.headers["location"])
    assert where.netloc == host and where.path == "/__gentity/handoff"
    assert parse_qs(where.query)["next"] == ["/headers?from=1"]
    with _preview(server, host) as browser:
        redeemed = browser.get(f"{where.path}?{where.query}")
        assert redeemed.status_code == 303 and redeemed.headers["location"] == "/headers?from=1"
        assert set(browser.cookies.keys()) == {"gentity_preview"}
        preview_cookie = browser.cookies["gentity_preview"]
        seen = _seen(browser.get("/headers?from=1"))
        assert "cookie" not in dict(seen["headers"])
        assert preview_cookie not in json.dumps(seen)
        # The code works once.
        assert browser.get(f"{where.path}?{where.query}").status_code == 403
        # An unsafe request with the cookie must come from the preview's own origin.
        evil = f"http://{_host(APP_PORT, 'sh-other1', server)}"
        assert browser.post("/upload", content=b"x", headers={"Origin": evil}).status_code == 403
        own = browser.post("/upload", content=b"x", headers={"Origin": f"http://{host}"})
        assert own.status_code == 200
    # The preview cookie opens that preview host only: not another port, not the API.
    with _preview(server, _host(SITE_PORT, sub, server)) as elsewhere:
        elsewhere.cookies.set("gentity_preview", preview_cookie)
        assert elsewhere.get("/index.txt").status_code == 200  # same instance, same owner
    with httpx.Client(base_url=server.url, timeout=30) as api:
        api.cookies.set("gentity_session", preview_cookie)
        assert api.get("/api/instances").status_code == 401


def test_websocket_through_the_preview(
    server: LiveServer, admin: httpx.Client, token: str, previewed: dict[str, Any]
) -> None:
    sub = previewed["subdomain"]
    url = f"ws://{_host(APP_PORT, sub, server)}/socket"

    async def scenario() -> None:
        auth = {"Authorization": f"Bearer {token}", "Cookie": "gentity_session=x; mine=2"}
        async with connect(
            url, host="127.0.0.1", port=server.port, additional_headers=auth, open_timeout=10
        ) as ws:
            await ws.send("hello")
            assert await ws.recv() == "echo:hello"
            await ws.send(b"\x00\x01binary")
            assert await ws.recv() == b"echo:\x00\x01binary"
            big = "x" * 100_000
            await ws.send(big)
            assert await ws.recv() == "echo:" + big
            await ws.send("headers")
            seen = dict(json.loads(await ws.recv())["headers"])
            assert "authorization" not in seen and seen["cookie"] == "mine=2"
        with pytest.raises(InvalidStatus) as refused:
            async with connect(url, host="127.0.0.1", port=server.port, open_timeout=10):
                pass
        assert refused.value.response.status_code == 401

        # Revoking the credential that opened it ends it, as for a terminal.
        minted = admin.post("/api/tokens", json={"name": "short-lived"}).json()
        headers = {"Authorization": f"Bearer {minted['token']}"}
        async with connect(
            url, host="127.0.0.1", port=server.port, additional_headers=headers, open_timeout=10
        ) as ws:
            await ws.send("still")
            assert await ws.recv() == "echo:still"
            assert admin.delete(f"/api/tokens/{minted['record']['id']}").status_code == 200
            with pytest.raises(ConnectionClosed):
                async with asyncio.timeout(15):
                    await ws.recv()
            assert ws.close_code == 4401

    asyncio.run(scenario())


def test_over_https_only_the_host_prefixed_preview_cookie_counts(
    server_factory: Callable[[Settings], LiveServer], settings_factory: Callable[..., Settings]
) -> None:
    # Another instance's page (a sibling host) can plant a plain ``gentity_preview`` cookie for
    # the parent domain from script, never a ``__Host-`` one: over https the plain name opens
    # nothing.
    server = server_factory(settings_factory(public_url="https://gentity.example.com"))
    main = {"Host": "gentity.example.com", "Origin": "https://gentity.example.com"}
    with httpx.Client(base_url=server.url, headers=main, timeout=30) as dashboard:
        session = signup(dashboard, "admin@example.com").headers["set-cookie"]
        assert session.startswith("__Host-gentity_session=")
        dashboard.headers["Cookie"] = session.split(";", 1)[0]
        token = mint_token(dashboard)
        with httpx.Client(
            base_url=server.url, timeout=30, headers={"Authorization": f"Bearer {token}"}
        ) as api:
            sub = create_shell(api)["subdomain"]
        start = dashboard.get(f"/dashboard/preview/{sub}/{APP_PORT}")
        assert start.status_code == 303, start.text
    where = urlsplit(start.headers["location"])
    host = f"{APP_PORT}-{sub}.gentity.example.com"
    assert (where.scheme, where.netloc) == ("https", host)
    with _preview(server, host) as browser:
        redeemed = browser.get(f"{where.path}?{where.query}")
        cookie = redeemed.headers["set-cookie"]
        assert cookie.startswith("__Host-gentity_preview=") and "Secure" in cookie
        secret = cookie.split(";", 1)[0].split("=", 1)[1]
        planted = browser.get("/", headers={"Cookie": f"gentity_preview={secret}"})
        assert planted.status_code == 401
        # The real one gets through (to an empty port: nothing listens on it yet).
        own = browser.get("/", headers={"Cookie": f"__Host-gentity_preview={secret}"})
        assert own.status_code == 502 and "nothing accepts connections" in own.json()["error"]


def test_connections_to_one_instance_are_capped(
    server_factory: Callable[[Settings], LiveServer], settings_factory: Callable[..., Settings]
) -> None:
    server = server_factory(settings_factory(preview_max_connections=1))
    with httpx.Client(base_url=server.url, timeout=30) as c:
        signup(c, "admin@example.com")
        token = mint_token(c)
    auth = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=server.url, timeout=30, headers=auth) as api:
        created = create_shell(api)
        asyncio.run(_start_servers(server.url, created["id"], token))

        def listening() -> bool:
            answer = api.get(f"/api/instances/{created['id']}/ports")
            return {SITE_PORT, APP_PORT} <= {p["port"] for p in answer.json()["ports"]}

        wait_until_blocking(listening, "both servers listening in the instance", timeout=30)
    sub = created["subdomain"]
    site = _preview(server, _host(SITE_PORT, sub, server), **auth)
    url = f"ws://{_host(APP_PORT, sub, server)}/socket"

    async def scenario() -> None:
        # An open WebSocket holds the one connection: the next request, on any port of the
        # instance, is refused without reaching it.
        async with connect(
            url, host="127.0.0.1", port=server.port, additional_headers=auth, open_timeout=10
        ) as ws:
            await ws.send("hello")
            assert await ws.recv() == "echo:hello"
            busy = await asyncio.to_thread(site.get, "/index.txt")
            assert busy.status_code == 503 and "too many connections" in busy.json()["error"]
            with pytest.raises(InvalidStatus) as refused:
                async with connect(
                    url, host="127.0.0.1", port=server.port, additional_headers=auth
                ):
                    pass
            assert refused.value.response.status_code == 503

    with site:
        asyncio.run(scenario())
        # Closed, it gives its place back.
        wait_until_blocking(
            lambda: site.get("/index.txt").status_code == 200, "the slot given back", timeout=10
        )
        assert site.get("/index.txt").text == "hello-preview\n"
