"""``exec`` in the SDK, sync and async, against the real server and a real instance."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from gentity import models
from gentity.client import ApiError, AsyncClient, Client, ExecOutput
from tests.client.test_live import instance, sdk
from tests.conftest import LiveServer

__all__ = ["instance", "sdk"]  # fixtures, used by name


def test_exec_and_its_stream(sdk: Client, instance: models.InstanceCreated) -> None:
    result = sdk.exec(
        instance.id,
        ["sh", "-c", 'cat; echo "$X" >&2; exit 3'],
        stdin="in\n",
        env={"X": "from env"},
        timeout=30,
    )
    assert (result.exit_code, result.signal, result.timed_out) == (3, None, False)
    assert (result.stdout, result.stderr) == ("in\n", "from env\n")
    assert not result.truncated

    events = list(sdk.instances.exec_stream(instance.id, ["sh", "-c", "echo a; echo b >&2"]))
    outputs, end = events[:-1], events[-1]
    assert set(outputs) == {ExecOutput("stderr", "b\n"), ExecOutput("stdout", "a\n")}
    assert isinstance(end, models.ExecExit) and end.exit_code == 0

    with pytest.raises(ApiError) as caught:
        sdk.exec(instance.id, [])
    assert caught.value.status == 400 and "command" in caught.value.message
    sdk.instances.stop(instance.id)
    with pytest.raises(ApiError) as caught:
        sdk.instances.exec_stream(instance.id, ["true"])
    assert caught.value.status == 409


def test_async_exec(server: LiveServer, token: str) -> None:
    async def scenario() -> None:
        async with AsyncClient(server.url, token) as client:
            created = await client.instances.create("shell", "none", "bash")
            try:
                result = await client.exec(created.id, ["sh", "-c", "kill -KILL $$"])
                assert (result.exit_code, result.signal) == (None, "SIGKILL")
                stream = await client.instances.exec_stream(
                    created.id, ["sh", "-c", "echo one; exit 5"], cwd="/"
                )
                items = [item async for item in stream]
                assert items[0] == ExecOutput("stdout", "one\n")
                assert isinstance(items[-1], models.ExecExit) and items[-1].exit_code == 5
                with pytest.raises(ApiError) as caught:
                    await client.instances.exec_stream("c000000000000000000000000", ["true"])
                assert caught.value.status == 404
            finally:
                with contextlib.suppress(ApiError):
                    await client.instances.delete(created.id)

    asyncio.run(scenario())
