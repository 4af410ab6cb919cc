"""The OpenAPI document tells the truth: errors, credentials, parameters, Allow; and
schemathesis, running every check it has against a real server, finds nothing."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from gentity.settings import Settings
from tests.conftest import LiveServer, signup

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
# Enough for every phase (examples, coverage, fuzzing, stateful) to reach each operation's
# answers, and well under a minute per database on a busy two-core machine.
MAX_EXAMPLES = 40
# Fixed, so that a red run is reproducible and a green one stays green; change it to explore.
SEED = 20261129

ERROR_REF = {"$ref": "#/components/schemas/Error"}
UTC_STAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z")
IDEMPOTENT = {("post", "/api/instances"), ("post", "/api/instances/{instance_id}/action")}


@pytest.mark.local_only  # the document is the same on every provider
def test_schemathesis_finds_nothing(
    server: LiveServer, settings: Settings, admin: httpx.Client
) -> None:
    """All of schemathesis' checks, all its phases, against the served app: no failure."""
    user_id = admin.get("/api/auth/me").json()["id"]
    env = {
        **os.environ,
        "SCHEMATHESIS_HOOKS": "tests.server.schemathesis_hooks",
        "GENTITY_FUZZ_DATABASE_URL": settings.resolved_database_url,
        "GENTITY_FUZZ_USER_ID": user_id,
        "NO_COLOR": "1",
    }
    command = [
        str(Path(sys.executable).with_name("st")),
        "--config-file",
        str(HERE / "schemathesis.toml"),
        "run",
        f"{server.url}/api/openapi.json",
        "--checks",
        "all",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--seed",
        str(SEED),
        # Seeded and stateless: no examples remembered from earlier runs, nothing written.
        "--generation-database",
        "none",
        "--workers",
        "1",
        "--request-timeout",
        "30",
    ]
    started = time.monotonic()
    run = subprocess.run(
        command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    elapsed = time.monotonic() - started
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-12000:]
    cases = re.search(r"(\d+) generated, (\d+) passed", output)
    assert cases is not None, output[-3000:]
    print(f"schemathesis: {cases.group(0)} in {elapsed:.1f}s")


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
                headers = responses[str(status)].get("headers", {})
                assert ("Retry-After" in headers) == (status in (429, 503)), (method, path)
            if path in public:
                assert operation["security"] == [], (method, path)
                assert 401 not in errors or path == "/api/auth/login", (method, path)
            else:
                assert operation["security"] == [{"bearerToken": []}, {"sessionCookie": []}]
                assert 401 in errors, (method, path)
            assert (404 in errors) == ("{" in path), (method, path)
            assert (403 in errors) == (method in ("post", "put", "delete")), (method, path)


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
            response = client.request("PATCH", concrete)  # no route answers PATCH
            assert response.status_code == 405, path
            allowed = {m.strip() for m in response.headers["allow"].split(",")}
            assert allowed == {m.upper() for m in operations}, path


def test_times_are_utc_with_z_on_every_answer(
    server_factory: Callable[[Settings], LiveServer],
    settings_factory: Callable[..., Settings],
    database_url: str,
) -> None:
    """An offset sent in is answered in UTC, by POST and GET alike, even when the database
    session's time zone is not UTC (PostgreSQL then hands back times in that zone)."""
    if database_url.startswith("postgresql"):
        database_url += "%20-ctimezone%3DAsia/Kolkata"
    server = server_factory(settings_factory(database_url=database_url))
    with httpx.Client(base_url=server.url, timeout=30) as client:
        assert signup(client, "admin@example.com").status_code == 200
        minted = client.post(
            "/api/tokens", json={"name": "laptop", "expiresAt": "2030-01-01T05:00:00+02:00"}
        ).json()["record"]
        listed = client.get("/api/tokens").json()["tokens"][0]
        me = client.get("/api/auth/me").json()
    assert minted["expiresAt"] == listed["expiresAt"] == "2030-01-01T03:00:00Z"
    assert minted["createdAt"] == listed["createdAt"]
    for stamp in (listed["createdAt"], me["createdAt"]):
        assert UTC_STAMP.fullmatch(stamp), stamp


def test_exec_is_described(client: httpx.Client) -> None:
    spec = client.get("/api/openapi.json").json()
    operation = spec["paths"]["/api/instances/{instance_id}/exec"]["post"]
    assert {"400", "404", "409", "502"} <= set(operation["responses"])
    content = operation["responses"]["200"]["content"]
    assert content["application/json"]["schema"] == {"$ref": "#/components/schemas/ExecResult"}
    assert "text/event-stream" in content
    stream = next(p for p in operation["parameters"] if p["name"] == "stream")
    assert {"type": "boolean"} in stream["schema"]["anyOf"]
    body = spec["components"]["schemas"]["ExecRequest"]
    assert body["required"] == ["command"]
    assert body["properties"]["timeout"]["anyOf"][0]["maximum"] == 3600
