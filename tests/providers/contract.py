"""The contract every compute provider must pass. Subclass and provide a ``provider`` fixture.

Tests are plain async functions run with ``asyncio.run`` so they need no plugin.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable
from typing import Any, TypeVar

import pytest

from gentity.guest import client as guest_client
from gentity.guest.protocol import Output
from gentity.providers.compute.base import (
    ComputeProvider,
    GuestLaunch,
    MachineHandle,
    MachineSpec,
    MachineState,
)

T = TypeVar("T")


def run(awaitable: Awaitable[T]) -> T:
    async def wrapper() -> T:
        return await awaitable

    return asyncio.run(wrapper())


def spec() -> MachineSpec:
    from gentity.server.db.ids import new_id

    return MachineSpec(
        instance_id=new_id(), subdomain="sh-test01", cpus=1, memory_mb=512, volume_gb=1
    )


def launch(secret: str) -> GuestLaunch:
    return GuestLaunch(agent="shell", command=["bash", "--norc", "-i"], secret=secret)


async def wait_agent(
    provider: ComputeProvider, handle: MachineHandle, secret: str
) -> dict[str, Any]:
    for _ in range(500):
        health = await guest_client.health(provider.guest_address(handle), secret)
        if health["state"] == "running":
            return health
        await asyncio.sleep(0.01)
    raise AssertionError(f"agent never ran: {health}")


async def shell_output(
    provider: ComputeProvider, handle: MachineHandle, secret: str, command: str, marker: str
) -> str:
    session = await guest_client.open_session(provider.guest_address(handle), secret)
    async with session:
        await session.send_input(command.encode() + b"\n")
        seen = b""
        async with asyncio.timeout(10):
            while marker.encode() not in seen:
                frame = await session.read()
                assert frame is not None
                if isinstance(frame, Output):
                    seen += frame.data
    return seen.decode(errors="replace")


class ProviderContract:
    """Behaviour every provider promises (see ``providers/compute/base.py``)."""

    def test_lifecycle(self, provider: ComputeProvider) -> None:
        secret = secrets.token_urlsafe(16)

        async def scenario() -> None:
            handle = await provider.create(spec())
            assert (await provider.status(handle)).state is MachineState.STOPPED
            await provider.start(handle, launch(secret))
            await provider.start(handle, launch(secret))  # idempotent
            assert (await provider.status(handle)).state is MachineState.RUNNING
            first = await wait_agent(provider, handle, secret)
            out = await shell_output(
                provider, handle, secret, "echo keep > kept.txt; echo wrote-$((1+1))", "wrote-2"
            )
            assert "wrote-2" in out
            await provider.stop(handle)
            await provider.stop(handle)  # idempotent
            assert (await provider.status(handle)).state is MachineState.STOPPED
            with pytest.raises(guest_client.GuestError):
                await guest_client.health(provider.guest_address(handle), secret, timeout=1)
            await provider.start(handle, launch(secret))
            await wait_agent(provider, handle, secret)
            out = await shell_output(
                provider, handle, secret, "cat kept.txt; echo done-$((0+1))", "done-1"
            )
            assert "keep" in out  # the volume survived stop/start
            await provider.restart(handle, launch(secret))
            second = await wait_agent(provider, handle, secret)
            assert second["startedAt"] != first["startedAt"]  # a fresh agent
            records = await provider.tail_logs(handle, 1000)
            assert any("wrote-2" in r["message"] for r in records)
            await provider.destroy(handle)
            await provider.destroy(handle)  # idempotent
            assert (await provider.status(handle)).state is MachineState.MISSING

        run(scenario())

    def test_wrong_secret_is_refused(self, provider: ComputeProvider) -> None:
        secret = secrets.token_urlsafe(16)

        async def scenario() -> None:
            handle = await provider.create(spec())
            try:
                await provider.start(handle, launch(secret))
                with pytest.raises(guest_client.GuestError):
                    await guest_client.health(provider.guest_address(handle), "wrong")
            finally:
                await provider.destroy(handle)

        run(scenario())

    def test_follow_logs_resumes_from_a_cursor(self, provider: ComputeProvider) -> None:
        secret = secrets.token_urlsafe(16)

        async def scenario() -> None:
            handle = await provider.create(spec())
            try:
                await provider.start(handle, launch(secret))
                await wait_agent(provider, handle, secret)
                cursor = await provider.log_cursor_before(handle, 0)
                await shell_output(
                    provider, handle, secret, "echo line-a; echo line-b; echo fin-$((1+1))", "fin-2"
                )
                seen: list[tuple[str, str]] = []
                stream = provider.follow_logs(handle, cursor)
                async with asyncio.timeout(10):
                    async for c, record in stream:
                        seen.append((c, record["message"]))
                        if record["message"] == "line-a":
                            break
                # follow_logs is typed AsyncIterator; providers return async generators, closed
                # here as the SSE endpoint closes them when its client leaves.
                await stream.aclose()  # type: ignore[attr-defined]
                resume = provider.follow_logs(handle, seen[-1][0])
                async with asyncio.timeout(10):
                    async for _c, record in resume:
                        assert record["message"] != "line-a"  # nothing repeated
                        if record["message"] == "line-b":
                            break
                await resume.aclose()  # type: ignore[attr-defined]  # as above
            finally:
                await provider.destroy(handle)

        run(scenario())
