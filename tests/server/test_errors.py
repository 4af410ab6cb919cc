"""One error contract: every 4xx/5xx body is {"error": "..."}, validation is 400 not 422."""

import re
import socket

import httpx
import pytest

from tests.conftest import LiveServer


def assert_error_body(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, (response.request.url, response.text)
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"} and isinstance(body["error"], str) and body["error"]
    message: str = body["error"]
    return message


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "c000000000000000000000000", path)


def _routes(server: LiveServer) -> dict[str, dict[str, bool]]:
    """Every HTTP route: its methods and whether each takes a JSON body (from OpenAPI)."""
    spec = server.app.openapi()
    return {
        path: {
            method.upper(): "application/json" in op.get("requestBody", {}).get("content", {})
            for method, op in ops.items()
        }
        for path, ops in spec["paths"].items()
    }


def test_every_route_answers_errors_in_one_shape(server: LiveServer, token: str) -> None:
    """Walk every route: unauthenticated, wrong method, malformed body, unknown ids."""
    routes = _routes(server)
    assert len(routes) >= 10
    public = {"/api/catalog/agents", "/healthz", "/readyz", "/api/auth/status", "/api/openapi.json"}
    no_auth_needed = public | {"/api/auth/login", "/api/auth/signup", "/api/auth/logout"}
    with (
        httpx.Client(base_url=server.url) as anonymous,
        httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}) as authed,
    ):
        for route, methods in routes.items():
            path = _concrete(route)
            for method, takes_body in methods.items():
                if route not in no_auth_needed:
                    assert_error_body(anonymous.request(method, path), 401)
                if takes_body:
                    bad = authed.request(
                        method, path, content=b"{nope", headers={"content-type": "application/json"}
                    )
                    assert_error_body(bad, 400)
                elif "{" in route:
                    assert_error_body(authed.request(method, path), 404)
            for method in {"GET", "POST", "PUT", "DELETE", "PATCH"} - set(methods):
                assert_error_body(anonymous.request(method, path), 405)


def test_unknown_route_is_json_404(client: httpx.Client) -> None:
    for path in ("/nope", "/api/nope", "/api/instances/x/y/z"):
        assert assert_error_body(client.get(path), 404) == "Not Found"


def test_malformed_json_is_400(admin: httpx.Client) -> None:
    response = admin.post(
        "/api/tokens", content=b'{"name": ', headers={"content-type": "application/json"}
    )
    assert assert_error_body(response, 400) == "Malformed JSON body"


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({}, "name"),
        ({"name": 5}, "name"),
        ({"name": ""}, "name"),
        ({"name": "x", "colour": "blue"}, "colour"),
        ([1, 2], "object"),
        ("just a string", "object"),
        (None, "body"),
    ],
)
def test_validation_is_400_naming_the_field(
    admin: httpx.Client, body: object, fragment: str
) -> None:
    response = admin.post("/api/tokens", json=body)
    message = assert_error_body(response, 400)
    assert fragment.lower() in message.lower()


def test_oversized_body_is_413(admin: httpx.Client) -> None:
    big = b'{"name": "' + b"x" * (2 * 1024 * 1024) + b'"}'
    response = admin.post("/api/tokens", content=big, headers={"content-type": "application/json"})
    assert assert_error_body(response, 413) == "Request body too large"


def test_oversized_chunked_body_is_413(server: LiveServer, token: str) -> None:
    """No Content-Length: the limit is enforced while the body streams in."""
    chunk = b"x" * 65536
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(
            b"POST /api/tokens HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Authorization: Bearer " + token.encode() + b"\r\n"
            b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        try:
            for _ in range(40):
                sock.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        sock.settimeout(10)
        reply = b""
        while b"\r\n\r\n" not in reply:
            reply += sock.recv(65536)
    assert reply.startswith(b"HTTP/1.1 413")


def test_openapi_describes_the_contract(client: httpx.Client) -> None:
    spec = client.get("/api/openapi.json").json()
    paths = spec["paths"]
    for path in ("/api/catalog/agents", "/api/tokens", "/api/tokens/{token_id}"):
        assert path in paths
    schemas = spec["components"]["schemas"]
    assert "createdAt" in schemas["TokenRecord"]["properties"]
    assert "defaultMemoryMb" in schemas["Agent"]["properties"]


def test_health_and_readiness(client: httpx.Client) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    # Everything the local provider enforces is installed here (and by .ci/run): no warning.
    ready = client.get("/readyz").json()
    assert ready.pop("database")["status"] == "ok"
    assert ready == {"status": "ok", "detail": []}
