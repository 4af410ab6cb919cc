"""The OpenAPI document tells the truth: errors, credentials, parameters, Allow."""

from __future__ import annotations

import re

import httpx

from tests.conftest import LiveServer

ERROR_REF = {"$ref": "#/components/schemas/Error"}
IDEMPOTENT = {("post", "/api/instances"), ("post", "/api/instances/{instance_id}/action")}


def test_every_operation_documents_its_errors_and_credentials(client: httpx.Client) -> None:
    spec = client.get("/api/openapi.json").json()
    assert spec["components"]["schemas"]["Error"]["required"] == ["error"]
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    schemes = spec["components"]["securitySchemes"]
    assert (schemes["bearerToken"]["type"], schemes["bearerToken"]["scheme"]) == ("http", "bearer")
    assert schemes["sessionCookie"]["in"] == "cookie"
    public = {"/healthz", "/readyz", "/api/catalog/agents"} | {
        f"/api/auth/{name}" for name in ("status", "login", "signup", "logout")
    }
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            errors = {int(s) for s in responses if int(s) >= 400}
            # 422 only where an Idempotency-Key can be reused with another body.
            assert (422 in errors) == ((method, path) in IDEMPOTENT), (method, path)
            for status in errors:
                body = responses[str(status)]["content"]["application/json"]["schema"]
                assert body == ERROR_REF, (method, path, status)
            if path in public:
                assert operation["security"] == [], (method, path)
                assert 401 not in errors or path == "/api/auth/login", (method, path)
            else:
                assert operation["security"] == [{"bearerToken": []}, {"sessionCookie": []}]
                assert 401 in errors, (method, path)
            assert (404 in errors) == ("{" in path), (method, path)
            assert (403 in errors) == (method in ("post", "delete")), (method, path)


def test_log_parameters_are_typed_and_bounded(client: httpx.Client) -> None:
    spec = client.get("/api/openapi.json").json()
    operation = spec["paths"]["/api/instances/{instance_id}/logs"]["get"]
    schemas = {p["name"]: p["schema"] for p in operation["parameters"]}
    assert schemas["lines"] | {"title": None} == {
        "type": "integer",
        "minimum": 1,
        "maximum": 1000,
        "title": None,
    }
    assert {"type": "boolean"} in schemas["follow"]["anyOf"]
    assert {"type": "integer", "enum": [0, 1]} in schemas["follow"]["anyOf"]
    assert schemas["cursor"]["type"] == schemas["Last-Event-ID"]["type"] == "integer"


def test_405_allows_every_method_of_the_path(server: LiveServer) -> None:
    """Each method of a path is a route of its own; Allow must name them all."""
    spec = server.app.openapi()
    with httpx.Client(base_url=server.url) as client:
        for path, operations in spec["paths"].items():
            concrete = re.sub(r"\{[^}]+\}", "c000000000000000000000000", path)
            response = client.request("PUT", concrete)
            assert response.status_code == 405, path
            allowed = {m.strip() for m in response.headers["allow"].split(",")}
            assert allowed == {m.upper() for m in operations}, path
