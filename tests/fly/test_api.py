"""The client's handling of Fly's errors, limits and leases, against the fake."""

from __future__ import annotations

import time

import httpx
import pytest

from gentity.providers.compute.fly.api import FlyApi
from gentity.providers.compute.fly.errors import FlyApiError, FlyErrorKind
from gentity.providers.compute.fly.http import authorization
from tests.fly.conftest import TOKEN, FakeFly

pytestmark = pytest.mark.anyio

# Never booted (skip_launch), so these tests need no sandbox.
IDLE = {"image": "registry.fly.io/idle:1", "init": {"cmd": ["sleep", "300"]}}


async def idle_machine(api: FlyApi, app: str) -> str:
    await api.create_app(app, "personal")
    machine = await api.create_machine(app, IDLE, skip_launch=True)
    assert machine["state"] == "created"
    return str(machine["id"])


def test_authorization_header_rule() -> None:
    assert authorization("fo1_abc") == "Bearer fo1_abc"
    assert authorization("Bearer fo1_abc") == "Bearer fo1_abc"
    assert authorization("FlyV1 fm2_abc,fm2_def") == "FlyV1 fm2_abc,fm2_def"


async def test_both_token_schemes_are_accepted_and_verified(fake: FakeFly) -> None:
    for token in ("fo1_plain", "FlyV1 fm2_macaroon"):
        async with FlyApi(token, base_url=fake.url) as api:
            tokens = (await api.verify())["tokens"]
            assert tokens[0]["org_slug"] == "personal"
    response = httpx.get(f"{fake.url}/v1/apps", headers={"Authorization": "Basic x"})
    assert response.status_code == 401
    assert response.json() == {"error": "Authenticate: token validation error"}


async def test_unauthorized_is_classified_without_the_token(fake: FakeFly, api: FlyApi) -> None:
    # A server that echoes the token back must not make it reach a user through the error.
    fake.fault(
        "GET", "^/v1/tokens/current$", respond={"status": 401, "body": {"error": f"bad {TOKEN}"}}
    )
    with pytest.raises(FlyApiError) as error:
        await api.verify()
    assert error.value.kind is FlyErrorKind.UNAUTHORIZED and error.value.status == 401
    assert TOKEN not in str(error.value) and "[token]" in error.value.message


async def test_name_taken(fake: FakeFly, api: FlyApi) -> None:
    await api.create_app("gentity-cl-taken", "personal")
    with pytest.raises(FlyApiError) as error:
        await api.create_app("gentity-cl-taken", "personal")
    assert error.value.kind is FlyErrorKind.NAME_TAKEN and error.value.status == 422
    # The other spelling of the field, as the docs show it.
    response = httpx.post(
        f"{fake.url}/v1/apps",
        json={"app_name": "gentity-cl-taken", "org_slug": "personal"},
        headers={"Authorization": "Bearer x"},
    )
    assert response.json() == {"error": "Name has already been taken", "status": "name_taken"}


async def test_capacity_error(fake: FakeFly, api: FlyApi) -> None:
    await api.create_app("gentity-cl-full", "personal")
    fake.control("PUT", "/capacity/ord", {})
    with pytest.raises(FlyApiError) as error:
        await api.create_volume("gentity-cl-full", "home", "ord", 1)
    assert error.value.kind is FlyErrorKind.CAPACITY
    assert "no capacity in ord" in error.value.message
    assert (await api.create_volume("gentity-cl-full", "home", "iad", 1))["region"] == "iad"
    fake.control("DELETE", "/capacity/ord")
    assert (await api.create_volume("gentity-cl-full", "home", "ord", 1))["region"] == "ord"


async def test_retry_after_is_honoured(fake: FakeFly, api: FlyApi) -> None:
    await api.create_app("gentity-cl-busy", "personal")
    limited = {"status": 429, "body": {"error": "rate limited"}, "headers": {"Retry-After": "1"}}
    fake.fault("GET", "^/v1/apps/gentity-cl-busy$", times=2, respond=limited)
    started = time.monotonic()
    assert (await api.get_app("gentity-cl-busy"))["name"] == "gentity-cl-busy"
    assert time.monotonic() - started >= 2

    # Asked to come back later than the client is willing to wait: raised at once.
    fake.fault(
        "GET", "^/v1/apps/gentity-cl-busy$", respond={**limited, "headers": {"Retry-After": "60"}}
    )
    started = time.monotonic()
    with pytest.raises(FlyApiError) as error:
        await api.get_app("gentity-cl-busy")
    assert error.value.kind is FlyErrorKind.RATE_LIMITED and time.monotonic() - started < 2


async def test_server_errors(fake: FakeFly, api: FlyApi) -> None:
    await api.create_app("gentity-cl-flaky", "personal")
    fake.fault("GET", "^/v1/apps/gentity-cl-flaky$", respond={"status": 503, "body": {}})
    assert (await api.get_app("gentity-cl-flaky"))["name"] == "gentity-cl-flaky"  # retried
    broken = {"status": 500, "body": {"error": "internal error"}}
    fake.fault("GET", "^/v1/apps/gentity-cl-flaky$", respond=broken)
    with pytest.raises(FlyApiError) as error:
        await api.get_app("gentity-cl-flaky")
    assert error.value.kind is FlyErrorKind.UPSTREAM
    assert (error.value.status, error.value.message) == (500, "internal error")


async def test_a_hang_past_the_timeout(fake: FakeFly) -> None:
    fake.fault("GET", "^/v1/tokens/current$", hang_seconds=3)
    async with FlyApi(TOKEN, base_url=fake.url, timeout=1) as api:
        started = time.monotonic()
        with pytest.raises(FlyApiError) as error:
            await api.verify()
        assert error.value.kind is FlyErrorKind.TIMEOUT and time.monotonic() - started < 3


async def test_wait_deadline(api: FlyApi) -> None:
    machine_id = await idle_machine(api, "gentity-cl-wait")
    with pytest.raises(FlyApiError) as error:
        await api.wait_machine("gentity-cl-wait", machine_id, "started", seconds=1)
    assert error.value.kind is FlyErrorKind.TIMEOUT and error.value.status == 408
    assert error.value.message == (
        "deadline_exceeded: machine failed to reach desired state, started, currently created"
    )


async def test_a_lease_held_by_someone_else(fake: FakeFly) -> None:
    async with FlyApi(TOKEN, base_url=fake.url, lease_wait=0.5) as impatient:
        machine_id = await idle_machine(impatient, "gentity-cl-lease")
        fake.control(
            "POST", f"/apps/gentity-cl-lease/machines/{machine_id}/lease", {"ttl": 2, "owner": "x"}
        )
        with pytest.raises(FlyApiError) as refused:
            await impatient.delete_machine("gentity-cl-lease", machine_id)
        assert refused.value.kind is FlyErrorKind.LEASE_HELD and refused.value.status == 409
        assert refused.value.message.startswith(
            f"aborted: machine ID {machine_id} lease currently held by x, expires at "
        )
        with pytest.raises(FlyApiError) as held:
            await impatient.acquire_lease("gentity-cl-lease", machine_id)
        assert held.value.kind is FlyErrorKind.LEASE_HELD

    # A patient client gets it once the other lease expires, and mutates with its nonce.
    async with FlyApi(TOKEN, base_url=fake.url, lease_wait=10) as patient:
        async with patient.leased("gentity-cl-lease", machine_id) as nonce:
            with pytest.raises(FlyApiError) as without_nonce:
                await patient.delete_machine("gentity-cl-lease", machine_id)
            assert without_nonce.value.kind is FlyErrorKind.LEASE_HELD
            await patient.delete_machine("gentity-cl-lease", machine_id, nonce=nonce)
        # Released on the way out; releasing again finds none, which is fine.
        await patient.release_lease("gentity-cl-lease", machine_id, nonce)


def test_lease_wire_format(fake: FakeFly) -> None:
    headers = {"Authorization": "Bearer x"}
    with httpx.Client(base_url=f"{fake.url}/v1", headers=headers) as raw:
        raw.post("/apps", json={"name": "gentity-cl-raw", "org_slug": "personal"})
        machine = raw.post(
            "/apps/gentity-cl-raw/machines", json={"config": IDLE, "skip_launch": True}
        ).json()
        path = f"/apps/gentity-cl-raw/machines/{machine['id']}/lease"
        lease = raw.post(f"{path}?ttl=30").json()  # fly-go's spelling: ttl in the query
        assert lease["status"] == "success" and len(lease["data"]["nonce"]) == 12
        nonce = {"fly-machine-lease-nonce": lease["data"]["nonce"]}
        assert raw.delete(path).status_code == 400  # the nonce header is required
        assert raw.delete(path, headers=nonce).json() == {"status": "success", "data": {"ok": True}}
        gone = raw.delete(path, headers=nonce)
        assert (gone.status_code, gone.json()) == (404, {"error": "lease not found"})
        assert raw.get("/no/such/route").json() == {"error": "not found"}
        wait = raw.get(f"/apps/gentity-cl-raw/machines/{machine['id']}/wait?timeout=61")
        assert wait.status_code == 400 and "error" in wait.json()


def test_the_fake_rate_limits_per_action_per_machine(fake: FakeFly) -> None:
    with httpx.Client(base_url=f"{fake.url}/v1", headers={"Authorization": "Bearer x"}) as raw:
        raw.post("/apps", json={"name": "gentity-cl-rl", "org_slug": "personal"})
        machine = raw.post(
            "/apps/gentity-cl-rl/machines", json={"config": IDLE, "skip_launch": True}
        ).json()
        events = f"/apps/gentity-cl-rl/machines/{machine['id']}/events"
        codes = [raw.get(events).status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        limited = raw.get(events)
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
        assert limited.json() == {"error": "rate limit exceeded"}
        # Another action on the same machine has a bucket of its own; reads allow 10.
        reads = [raw.get(f"/apps/gentity-cl-rl/machines/{machine['id']}") for _ in range(10)]
        assert {r.status_code for r in reads} == {200}


async def test_the_client_paces_itself_under_the_limits(api: FlyApi) -> None:
    machine_id = await idle_machine(api, "gentity-cl-pace")
    started = time.monotonic()
    for _ in range(6):  # a burst of 3, then 1/s: no 429 ever reaches the caller
        assert (await api.machine_events("gentity-cl-pace", machine_id))[0]["type"] == "launch"
    assert time.monotonic() - started >= 2.5


async def test_metadata(api: FlyApi) -> None:
    machine_id = await idle_machine(api, "gentity-cl-meta")
    await api.set_metadata("gentity-cl-meta", machine_id, "gentity_instance", "i-123")
    assert await api.get_metadata("gentity-cl-meta", machine_id) == {"gentity_instance": "i-123"}
    listed = await api.list_machines("gentity-cl-meta", metadata={"gentity_instance": "i-123"})
    assert [m["id"] for m in listed] == [machine_id]
    assert await api.list_machines("gentity-cl-meta", metadata={"gentity_instance": "other"}) == []
    await api.delete_metadata("gentity-cl-meta", machine_id, "gentity_instance")
    assert await api.get_metadata("gentity-cl-meta", machine_id) == {}


async def test_the_header_sent_on_the_wire() -> None:
    seen: list[str] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["authorization"])
        return httpx.Response(200, json={"tokens": []})

    for token in ("fo1_plain", "Bearer fo1_plain", "FlyV1 fm2_a,fm2_b"):
        async with FlyApi(token, transport=httpx.MockTransport(record)) as api:
            await api.verify()
    assert seen == ["Bearer fo1_plain", "Bearer fo1_plain", "FlyV1 fm2_a,fm2_b"]


async def test_an_unreachable_api_is_an_upstream_error_without_the_token() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(f"cannot reach {request.url} with {TOKEN}", request=request)

    async with FlyApi(TOKEN, transport=httpx.MockTransport(refuse)) as api:
        with pytest.raises(FlyApiError) as error:
            await api.get_app("gentity-cl-x")
    assert error.value.kind is FlyErrorKind.UPSTREAM and error.value.status is None
    assert TOKEN not in str(error.value)


async def test_retry_after_as_an_http_date() -> None:
    answers = [
        httpx.Response(503, headers={"Retry-After": "Thu, 01 Jan 1970 00:00:00 GMT"}, json={}),
        httpx.Response(200, json={"name": "gentity-cl-x"}),
    ]
    async with FlyApi(TOKEN, transport=httpx.MockTransport(lambda _: answers.pop(0))) as api:
        assert (await api.get_app("gentity-cl-x"))["name"] == "gentity-cl-x"
    assert answers == []


async def test_an_answer_that_is_not_json_is_an_upstream_error() -> None:
    def html(_: httpx.Request) -> httpx.Response:
        return httpx.Response(200, text="<html>maintenance</html>")

    async with FlyApi(TOKEN, transport=httpx.MockTransport(html)) as api:
        with pytest.raises(FlyApiError) as error:
            await api.get_app("gentity-cl-x")
    assert error.value.kind is FlyErrorKind.UPSTREAM and "not JSON" in error.value.message


async def test_an_error_under_a_lease_is_not_hidden_by_its_release(
    fake: FakeFly, api: FlyApi
) -> None:
    machine_id = await idle_machine(api, "gentity-cl-mask")
    fake.fault("DELETE", "/lease$", respond={"status": 500, "body": {"error": "boom"}})
    with pytest.raises(RuntimeError, match="the real problem"):
        async with api.leased("gentity-cl-mask", machine_id):
            raise RuntimeError("the real problem")
