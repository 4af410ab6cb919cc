"""``GET /metrics``: off by default, its own bearer token, and the families a scraper expects,
with instances counted by status, requests by route template, streams and operation times."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator

import httpx
import pytest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from gentity.settings import Settings
from tests.conftest import LiveServer, mint_token, signup
from tests.server.test_instances import create_shell

METRICS_TOKEN = "metrics-token-for-tests-0123456789"


@pytest.fixture
def metrics_server(
    server_factory: Callable[[Settings], LiveServer], settings_factory: Callable[..., Settings]
) -> LiveServer:
    return server_factory(settings_factory(metrics_token=METRICS_TOKEN))


@pytest.fixture
def user(metrics_server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=metrics_server.url, timeout=30) as signed_in:
        assert signup(signed_in, "admin@example.com").status_code == 200
        token = mint_token(signed_in)
    with httpx.Client(
        base_url=metrics_server.url, timeout=30, headers={"Authorization": f"Bearer {token}"}
    ) as c:
        yield c


def scrape(server: LiveServer) -> dict[str, Metric]:
    response = httpx.get(
        f"{server.url}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {family.name: family for family in text_string_to_metric_families(response.text)}


def value(family: Metric, sample_name: str, **labels: str) -> float | None:
    for sample in family.samples:
        if sample.name == sample_name and all(sample.labels.get(k) == v for k, v in labels.items()):
            return float(sample.value)
    return None


def test_off_by_default_is_an_ordinary_404(client: httpx.Client) -> None:
    response = client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert response.status_code == 404
    assert response.json() == {"error": "Not Found"}


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong-token-wrong-token", f"Basic {METRICS_TOKEN}", f"Bearer {METRICS_TOKEN}x"],
)
def test_a_missing_or_wrong_token_is_401(
    metrics_server: LiveServer, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    response = httpx.get(f"{metrics_server.url}/metrics", headers=headers)
    assert response.status_code == 401
    assert response.json() == {"error": "Unauthorized"}


def test_a_users_api_token_is_not_a_metrics_token(
    metrics_server: LiveServer, user: httpx.Client
) -> None:
    assert user.get("/metrics").status_code == 401


def test_not_in_the_openapi_document(metrics_server: LiveServer) -> None:
    spec = httpx.get(f"{metrics_server.url}/api/openapi.json").json()
    assert "/metrics" not in spec["paths"]


def test_the_token_is_a_secret_and_must_be_long(settings_factory: Callable[..., Settings]) -> None:
    settings = settings_factory(metrics_token=METRICS_TOKEN)
    assert METRICS_TOKEN not in repr(settings) and METRICS_TOKEN not in str(settings)
    with pytest.raises(ValueError, match="at least 16"):
        settings_factory(metrics_token="short")


def test_families_instances_requests_streams_and_operations(
    metrics_server: LiveServer, user: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    iid = create_shell(user)["id"]
    assert user.post(f"/api/instances/{iid}/action", json={"action": "stop"}).status_code == 200
    second = create_shell(user)["id"]
    assert user.get(f"/api/instances/{iid}").status_code == 200
    assert user.get("/healthz").status_code == 200
    assert user.get("/no/such/path").status_code == 404

    following = threading.Event()
    done = threading.Event()

    def follow() -> None:
        url = f"{metrics_server.url}/api/instances/{second}/events?follow=1"
        with httpx.stream("GET", url, headers=user.headers, timeout=60) as response:
            for line in response.iter_lines():
                if line.startswith("data: "):
                    following.set()
        done.set()

    threading.Thread(target=follow, daemon=True).start()
    assert following.wait(20)

    families = scrape(metrics_server)
    assert {
        "gentity_http_requests",
        "gentity_http_request_duration_seconds",
        "gentity_instances",
        "gentity_open_streams",
        "gentity_instance_operation_duration_seconds",
    } <= set(families)

    instances = families["gentity_instances"]
    provider = metrics_server.app.state.ctx.providers.default.name
    assert value(instances, "gentity_instances", status="stopped", provider=provider) == 1
    assert value(instances, "gentity_instances", status="running", provider=provider) == 1
    assert value(instances, "gentity_instances", status="destroyed") is None

    requests = families["gentity_http_requests"]
    route = "/api/instances/{instance_id}"
    total = "gentity_http_requests_total"
    assert value(requests, total, method="GET", route=route, status="200") == 1
    assert value(requests, total, method="POST", route="/api/instances", status="200") == 2
    assert value(requests, total, method="GET", route="unmatched", status="404") == 1
    labels = [s.labels.get("route", "") for s in requests.samples]
    assert not any(iid in label or second in label for label in labels), "an id in a label"
    latency = families["gentity_http_request_duration_seconds"]
    count = "gentity_http_request_duration_seconds_count"
    assert value(latency, count, method="GET", route="/healthz") == 1

    streams = families["gentity_open_streams"]
    assert value(streams, "gentity_open_streams", kind="events") == 1
    assert value(streams, "gentity_open_streams", kind="terminal") == 0

    operations = families["gentity_instance_operation_duration_seconds"]
    ops = "gentity_instance_operation_duration_seconds_count"
    assert value(operations, ops, operation="create", outcome="ok") == 2
    assert value(operations, ops, operation="stop", outcome="ok") == 1

    # Destroyed instances leave the count; a finished follow leaves the gauge.
    assert user.delete(f"/api/instances/{second}").status_code == 200
    assert done.wait(10)
    after = scrape(metrics_server)
    assert value(after["gentity_instances"], "gentity_instances", status="running") is None
    assert value(after["gentity_open_streams"], "gentity_open_streams", kind="events") == 0
    destroyed = "gentity_instance_operation_duration_seconds_count"
    assert value(after[ops.removesuffix("_count")], destroyed, operation="destroy") == 1
    user.delete(f"/api/instances/{iid}")
    assert METRICS_TOKEN not in caplog.text
