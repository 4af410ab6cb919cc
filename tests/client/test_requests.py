"""What the SDK sends and how it reads answers, against ``httpx.MockTransport``."""

from __future__ import annotations

import asyncio
import json
import socket

import httpx
import pytest

from gentity import models
from gentity.client import ApiConnectionError, ApiError, AsyncClient, Client

URL = "http://gentity.test"
TOKEN = "gn_live_abcdefghijklmnopqrstuvwxyz12"

INSTANCE = {
    "id": "i1",
    "name": "Shell - bash",
    "subdomain": "sh-abc",
    "agentType": "shell",
    "modelProvider": "none",
    "modelName": "bash",
    "status": "running",
    "errorMessage": None,
    "createdAt": "2026-01-01T00:00:00Z",
    "updatedAt": "2026-01-01T00:00:00Z",
}


def client_answering(
    answer: httpx.Response, seen: list[httpx.Request] | None = None, token: str | None = TOKEN
) -> Client:
    def handle(request: httpx.Request) -> httpx.Response:
        if seen is not None:
            seen.append(request)
        return answer

    return Client(URL, token, transport=httpx.MockTransport(handle))


@pytest.mark.parametrize(
    ("answer", "status", "message"),
    [
        (httpx.Response(404, json={"error": "Not Found"}), 404, "Not Found"),
        (httpx.Response(409, json={"error": "cannot stop it now"}), 409, "cannot stop it now"),
        (httpx.Response(401, json={"error": "Unauthorized"}), 401, "Unauthorized"),
        (httpx.Response(502, text="<html>Bad gateway</html>"), 502, "Bad Gateway"),
        (httpx.Response(500, json={"detail": "?"}), 500, "Internal Server Error"),
    ],
)
def test_error_answers(answer: httpx.Response, status: int, message: str) -> None:
    with pytest.raises(ApiError) as caught, client_answering(answer) as c:
        c.instances.get("i1")
    assert (caught.value.status, caught.value.message) == (status, message)
    assert str(caught.value) == f"{message} ({status})"


def test_answers_that_are_not_the_api() -> None:
    # A wrong URL that happens to serve something: still an ApiError, never a crash.
    html = httpx.Response(200, text="<html>hello</html>")
    with client_answering(html) as c, pytest.raises(ApiError, match="not JSON"):
        c.me()
    odd = httpx.Response(200, json={"unexpected": True})
    with client_answering(odd) as c, pytest.raises(ApiError, match="unexpected answer"):
        c.me()
    redirect = httpx.Response(301, headers={"location": "https://gentity.test/api/auth/me"})
    with client_answering(redirect) as c, pytest.raises(ApiError) as caught:
        c.me()
    assert "redirects to https://gentity.test/api/auth/me" in caught.value.message


def test_connection_refused_is_one_clear_line() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    with Client(url, TOKEN) as c, pytest.raises(ApiConnectionError) as caught:
        c.catalog()
    assert str(caught.value) == f"cannot reach {url}: connection refused"
    assert isinstance(caught.value, ConnectionError) and isinstance(caught.value, ApiError)
    assert caught.value.status == 0


def test_transport_failures_are_connection_errors() -> None:
    def broken(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectTimeout("timed out", request=request)

    with (
        Client(URL, transport=httpx.MockTransport(broken)) as c,
        pytest.raises(ApiConnectionError) as caught,
    ):
        c.catalog()
    assert str(caught.value) == f"cannot reach {URL}: timed out"


def test_requests_carry_the_token_and_camel_case_bodies() -> None:
    seen: list[httpx.Request] = []
    created = httpx.Response(200, json={"id": "i1", "subdomain": "sh-abc", "status": "running"})
    with client_answering(created, seen) as c:
        result = c.instances.create("claude-code", "anthropic", "claude-sonnet-4-5", api_key="k")
    assert result == models.InstanceCreated(id="i1", subdomain="sh-abc", status="running")
    request = seen[0]
    assert (request.method, request.url.path) == ("POST", "/api/instances")
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert request.headers["user-agent"].startswith("gentity-python/")
    # No nulls for what was not given; the server fills in its defaults.
    assert json.loads(request.content) == {
        "agentType": "claude-code",
        "modelProvider": "anthropic",
        "modelName": "claude-sonnet-4-5",
        "apiKey": "k",
    }


def test_create_sends_env_and_repo_only_when_given() -> None:
    seen: list[httpx.Request] = []
    created = httpx.Response(200, json={"id": "i1", "subdomain": "sh-abc", "status": "running"})
    repo = "https://example.com/project.git"
    with client_answering(created, seen) as c:
        c.instances.create("shell", "none", "bash", env={"CI": "1"}, repo=repo)
    assert json.loads(seen[0].content) == {
        "agentType": "shell",
        "modelProvider": "none",
        "modelName": "bash",
        "env": {"CI": "1"},
        "repo": repo,
    }


@pytest.mark.parametrize("minutes", [0, 30])
def test_create_sends_auto_stop_minutes_zero_included(minutes: int) -> None:
    seen: list[httpx.Request] = []
    created = httpx.Response(200, json={"id": "i1", "subdomain": "sh-abc", "status": "running"})
    with client_answering(created, seen) as c:
        c.instances.create("shell", "none", "bash", auto_stop_minutes=minutes)
        c.instances.create("shell", "none", "bash")

    async def from_async() -> None:
        def handle(request: httpx.Request) -> httpx.Response:
            seen.append(request)
            return httpx.Response(200, json={"id": "i1", "subdomain": "sh-a", "status": "running"})

        transport = httpx.MockTransport(handle)
        async with AsyncClient(URL, TOKEN, transport=transport) as ac:
            await ac.instances.create("shell", "none", "bash", auto_stop_minutes=minutes)

    asyncio.run(from_async())
    sent = [json.loads(r.content) for r in seen]
    assert sent[0]["autoStopMinutes"] == minutes
    assert "autoStopMinutes" not in sent[1]  # the server's default
    assert sent[2]["autoStopMinutes"] == minutes


def test_the_auto_stop_time_is_read() -> None:
    answer = {**INSTANCE, "autoStopMinutes": 30, "autoStopAt": "2026-01-01T00:30:00Z"}
    with client_answering(httpx.Response(200, json=answer)) as c:
        got = c.instances.get("i1")
    assert got.auto_stop_minutes == 30
    assert (
        got.auto_stop_at is not None and got.auto_stop_at.isoformat() == "2026-01-01T00:30:00+00:00"
    )
    with client_answering(httpx.Response(200, json=INSTANCE)) as c:
        older = c.instances.get("i1")  # a server from before auto-stop
    assert (older.auto_stop_minutes, older.auto_stop_at) == (0, None)


def test_create_sends_the_restart_policy_when_given() -> None:
    seen: list[httpx.Request] = []
    created = httpx.Response(200, json={"id": "i1", "subdomain": "sh-abc", "status": "running"})
    with client_answering(created, seen) as c:
        c.instances.create("shell", "none", "bash", restart_policy="never")
    assert json.loads(seen[0].content)["restartPolicy"] == "never"


def test_without_a_token_no_authorization_header() -> None:
    seen: list[httpx.Request] = []
    with client_answering(httpx.Response(200, json={"agents": []}), seen, token=None) as c:
        assert c.catalog() == []
    assert "authorization" not in seen[0].headers


def test_ids_cannot_escape_their_path_segment() -> None:
    seen: list[httpx.Request] = []
    with client_answering(httpx.Response(200, json=INSTANCE), seen) as c:
        c.instances.get("../tokens")
    assert seen[0].url.raw_path == b"/api/instances/..%2Ftokens"


def test_every_call_maps_to_its_route() -> None:
    seen: list[httpx.Request] = []
    answers = {
        ("GET", "/api/instances"): {"instances": [INSTANCE]},
        ("GET", "/api/instances/i1"): INSTANCE,
        ("POST", "/api/instances/i1/action"): {"ok": True},
        ("DELETE", "/api/instances/i1"): {"ok": True},
        ("GET", "/api/instances/i1/logs"): {
            "logs": [{"timestamp": "t", "level": "info", "message": "m"}]
        },
        ("GET", "/api/tokens"): {"tokens": []},
        ("DELETE", "/api/tokens/t1"): {"ok": True},
    }

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=answers[(request.method, request.url.path)])

    with Client(URL, TOKEN, transport=httpx.MockTransport(handle)) as c:
        assert c.instances.list()[0].status is models.InstanceStatus.RUNNING
        assert c.instances.get("i1").agent_type == "shell"
        c.instances.start("i1")
        c.instances.stop("i1")
        c.instances.restart("i1")
        c.instances.delete("i1")
        assert c.logs("i1", lines=5)[0].message == "m"
        assert c.tokens.list() == []
        c.tokens.revoke("t1")
    actions = [json.loads(r.content)["action"] for r in seen if r.url.path.endswith("/action")]
    assert actions == ["start", "stop", "restart"]
    assert next(r for r in seen if r.url.path.endswith("/logs")).url.params["lines"] == "5"


def test_login_switches_to_the_session_cookie() -> None:
    seen: list[httpx.Request] = []
    user = {"id": "u1", "email": "a@b.c", "isAdmin": False, "createdAt": "2026-01-01T00:00:00Z"}

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path == "/api/auth/login":
            return httpx.Response(200, json=user, headers={"set-cookie": "gentity_session=s1"})
        return httpx.Response(200, json=user if request.method == "GET" else {"ok": True})

    with Client(URL, TOKEN, transport=httpx.MockTransport(handle)) as c:
        assert c.login("a@b.c", "pw").email == "a@b.c"
        c.me()
        c.logout()
        c.me()
    assert json.loads(seen[0].content) == {"email": "a@b.c", "password": "pw"}
    assert "authorization" not in seen[1].headers
    assert seen[1].headers["cookie"] == "gentity_session=s1"
    assert "cookie" not in seen[3].headers


def test_async_client_maps_errors_the_same_way() -> None:
    async def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/instances":
            return httpx.Response(200, json={"instances": [INSTANCE]})
        return httpx.Response(404, json={"error": "Not Found"})

    async def main() -> None:
        async with AsyncClient(URL, TOKEN, transport=httpx.MockTransport(handle)) as c:
            assert [i.id for i in await c.instances.list()] == ["i1"]
            with pytest.raises(ApiError) as caught:
                await c.instances.get("nope")
            assert caught.value.status == 404

    asyncio.run(main())


def test_the_package_exports_the_sdk_lazily() -> None:
    import gentity
    import gentity.client

    assert gentity.Client is gentity.client.Client
    assert gentity.AsyncClient is gentity.client.AsyncClient
    assert gentity.ApiError is gentity.client.ApiError
    with pytest.raises(AttributeError):
        _ = gentity.Nope


def test_importing_gentity_does_not_load_the_sdk() -> None:
    import subprocess
    import sys

    code = "import sys, gentity; print(sorted({'httpx', 'websockets'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_socket_errors_read_well() -> None:
    from gentity.client.errors import describe_transport_error

    # asyncio (used by the terminal's WebSocket) words a refusal differently from httpx.
    asyncio_style = ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 1)")
    assert describe_transport_error(asyncio_style) == "connection refused"
    assert describe_transport_error(TimeoutError()) == "timed out"
    unknown_host = socket.gaierror(-2, "Name or service not known")
    assert describe_transport_error(unknown_host) == "name or service not known"
