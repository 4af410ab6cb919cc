"""The SDK against the real server (SQLite and PostgreSQL), instances included."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator

import httpx
import pytest

from gentity import models
from gentity.client import (
    ApiError,
    AsyncClient,
    Client,
    TerminalExit,
    TerminalOutput,
)
from tests.conftest import PASSWORD, LiveServer


@pytest.fixture
def sdk(server: LiveServer, token: str) -> Iterator[Client]:
    with Client(server.url, token) as client:
        yield client


@pytest.fixture
def instance(sdk: Client) -> Iterator[models.InstanceCreated]:
    created = sdk.instances.create("shell", "none", "bash", name="sdk test")
    yield created
    with contextlib.suppress(ApiError):  # instances are processes that outlive the server
        sdk.instances.delete(created.id)


def test_accounts_and_tokens(server: LiveServer, admin: httpx.Client) -> None:
    with Client(server.url) as anonymous:
        shell = next(a for a in anonymous.catalog() if a.id == "shell")
        assert shell.requires_api_key is False and shell.models[0].name == "bash"
        with pytest.raises(ApiError) as caught:
            anonymous.me()
        assert (caught.value.status, caught.value.message) == (401, "Unauthorized")

        assert anonymous.login("admin@example.com", PASSWORD).is_admin
        minted = anonymous.tokens.create("sdk")
        assert minted.token.startswith(minted.record.prefix)
        anonymous.logout()
        with pytest.raises(ApiError):
            anonymous.me()

    with Client(server.url, minted.token) as client:
        assert client.me().email == "admin@example.com"
        assert minted.record.id in [t.id for t in client.tokens.list()]
        client.tokens.revoke(minted.record.id)
        with pytest.raises(ApiError) as caught:
            client.me()
        assert caught.value.status == 401
    with Client(server.url, "gn_live_x") as wrong, pytest.raises(ApiError) as caught:
        wrong.login("admin@example.com", "not the password")
    assert caught.value.status == 401


def test_instance_lifecycle_logs_and_terminal(
    sdk: Client, instance: models.InstanceCreated
) -> None:
    assert instance.status is models.InstanceStatus.RUNNING
    got = sdk.instances.get(instance.id)
    assert (got.name, got.agent_type) == ("sdk test", "shell")
    assert instance.id in [i.id for i in sdk.instances.list()]

    with sdk.attach(instance.id, cols=100, rows=30) as terminal:
        terminal.send("stty size; echo sd''k-marker; exit 3\n")
        output = "".join(e.data for e in terminal if isinstance(e, TerminalOutput))
    assert "30 100" in output and "sdk-marker" in output
    assert terminal.exit == TerminalExit(exit_code=3, signal=None)
    assert terminal.exit.status == 3

    history = sdk.logs(instance.id, lines=1000)
    assert history and all(isinstance(r, models.LogLine) for r in history)

    # Follow from two lines back and stop; stop and start the machine so there is more to
    # read; resume from the cursor: the next line is the one right after, no repeat, no gap.
    with sdk.follow_logs(instance.id, lines=2) as stream:
        first = [next(stream), next(stream)]
        cursor = stream.last_event_id
    assert cursor is not None
    sdk.instances.stop(instance.id)
    assert sdk.instances.get(instance.id).status is models.InstanceStatus.STOPPED
    sdk.instances.start(instance.id)
    with sdk.follow_logs(instance.id, last_event_id=cursor) as stream:
        resumed = next(stream)
    after = sdk.logs(instance.id, lines=1000)
    at = after.index(first[1])
    assert after[at - 1] == first[0]  # the two replayed lines were consecutive
    assert resumed == after[at + 1]

    sdk.instances.restart(instance.id)
    sdk.instances.delete(instance.id)
    with pytest.raises(ApiError) as caught:
        sdk.instances.get(instance.id)
    assert caught.value.status == 404


def test_async_client(server: LiveServer, token: str, admin: httpx.Client) -> None:
    async def main() -> None:
        async with AsyncClient(server.url, token) as client:
            assert (await client.me()).email == "admin@example.com"
            created = await client.instances.create("shell", "none", "bash")
            try:
                async with client.attach(created.id, shell=True) as terminal:
                    await terminal.resize(90, 20)
                    await terminal.send("stty size; exit 7\n")
                    output = ""
                    async for event in terminal:
                        if isinstance(event, TerminalOutput):
                            output += event.data
                assert "20 90" in output
                assert terminal.exit is not None and terminal.exit.status == 7

                async with client.follow_logs(created.id, lines=1) as stream:
                    record = await asyncio.wait_for(stream.__anext__(), 30)
                assert record.message
                with pytest.raises(ApiError) as caught:
                    await client.instances.stop("nope")
                assert caught.value.status == 404
            finally:
                await client.instances.delete(created.id)
            with pytest.raises(ApiError) as caught:
                async with client.attach(created.id):
                    pass
            assert caught.value.status == 404

    started = time.monotonic()
    asyncio.run(main())
    assert time.monotonic() - started < 60


def test_events_pages_and_a_follow_that_ends_with_the_instance(
    sdk: Client, instance: models.InstanceCreated
) -> None:
    sdk.instances.stop(instance.id)
    first = sdk.events(instance.id, limit=2)
    assert [e.to_status for e in first.events] == [
        models.InstanceStatus.STOPPED,
        models.InstanceStatus.STOPPING,
    ]
    assert first.next_before == first.events[-1].id
    rest = sdk.instances.events(instance.id, before=first.next_before)
    assert rest.next_before is None
    assert [e.to_status.value for e in reversed(rest.events)] == [
        "provisioning",
        "starting",
        "running",
    ]
    assert rest.events[-1].from_status is None and rest.events[-1].actor.startswith("token:")

    with sdk.follow_events(instance.id, limit=1) as stream:
        assert next(stream).to_status is models.InstanceStatus.STOPPED
        resume_from = stream.last_event_id
        sdk.instances.start(instance.id)
        assert [next(stream).to_status.value for _ in range(2)] == ["starting", "running"]
    sdk.instances.delete(instance.id)
    # Resumed after "stopped": the rest of the history, and the iteration ends by itself.
    rest_of_it = list(sdk.follow_events(instance.id, last_event_id=resume_from))
    assert [e.to_status.value for e in rest_of_it] == [
        "starting",
        "running",
        "destroying",
        "destroyed",
    ]


def test_async_events_follow_ends_with_the_instance(server: LiveServer, token: str) -> None:
    async def run() -> list[str]:
        async with AsyncClient(server.url, token) as client:
            created = await client.instances.create("shell", "none", "bash")
            page = await client.events(created.id)
            assert page.events[0].to_status is models.InstanceStatus.RUNNING
            await client.instances.delete(created.id)
            return [e.to_status.value async for e in client.follow_events(created.id, limit=2)]

    assert asyncio.run(run()) == ["destroying", "destroyed"]
