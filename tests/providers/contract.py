"""The contract every compute provider must pass.

Subclass :class:`ProviderContract` and provide two fixtures: ``provider``, and ``elsewhere``, the
same provider as another server (another host) would run it. Tests are plain async functions
run with ``asyncio.run`` so they need no plugin.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable
from typing import Any, ClassVar, TypeVar

import pytest

from gentity.guest import client as guest_client
from gentity.guest.protocol import Output
from gentity.providers.compute.base import (
    ComputeProvider,
    GuestLaunch,
    MachineHandle,
    MachineSpec,
    MachineState,
    MachineStatus,
    ProviderUnavailable,
    guest_config,
)
from gentity.providers.compute.registry import Providers

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
    endpoint = provider.guest_endpoint(handle)
    health = await guest_client.health(endpoint, secret)
    async with asyncio.timeout(10):
        while health["state"] != "running":
            health = await guest_client.wait(endpoint, secret, since=health["version"])
    return health


async def shell_output(
    provider: ComputeProvider, handle: MachineHandle, secret: str, command: str, marker: str
) -> str:
    session = await guest_client.open_session(provider.guest_endpoint(handle), secret)
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


async def start(
    provider: ComputeProvider, handle: MachineHandle, launch: GuestLaunch, restart: bool = False
) -> MachineHandle:
    """Start (or restart) and configure the guest, as the control plane does; carry on with
    the handle the provider may have replaced."""
    operation = provider.restart if restart else provider.start
    handle = await operation(handle, launch) or handle
    config = guest_config(launch, provider.guest_layout(handle, launch))
    await guest_client.configure(provider.guest_endpoint(handle), launch.secret, config)
    return handle


async def messages(provider: ComputeProvider, handle: MachineHandle, secret: str) -> list[str]:
    """The running machine's last 1000 log messages, read through its guest."""
    records, _ = await guest_client.logs(provider.guest_endpoint(handle), secret, lines=1000)
    return [r["message"] for r in records]


async def states_during(
    provider: ComputeProvider, handle: MachineHandle, operation: Awaitable[T]
) -> tuple[list[MachineState], T]:
    """Every distinct state ``status`` reported while ``operation`` ran, in order, and what the
    operation returned."""
    task = asyncio.ensure_future(operation)
    seen: list[MachineState] = []
    while True:
        state = (await provider.status(handle)).state
        if not seen or seen[-1] is not state:
            seen.append(state)
        if task.done():
            return seen, await task
        await asyncio.sleep(0.002)


class ProviderContract:
    """Behaviour every provider promises (see ``providers/compute/base.py``)."""

    machines_belong_to_a_host: ClassVar[bool]
    """Whether only a server on the machine's host can act on it (``local``), or any server
    can (a cloud API): what ``unreachable`` must say to the ``elsewhere`` provider."""
    reports_its_operations: ClassVar[bool]
    """Whether ``status`` shows this provider object's own start, stop and destroy as in
    progress while they run (``local`` knows them; a cloud API may answer too late to see)."""

    def test_regions_are_named_once_each(self, provider: ComputeProvider) -> None:
        regions = provider.regions()
        codes = [r.code for r in regions]
        assert len(set(codes)) == len(codes), codes
        # A code goes in a create request and a label into the dashboard's picker.
        assert all(r.code.strip() and r.label.strip() for r in regions), regions

    def test_lifecycle(self, provider: ComputeProvider) -> None:
        secret = secrets.token_urlsafe(16)

        async def scenario() -> None:
            handle = await provider.create(spec())
            assert (await provider.status(handle)).state is MachineState.STOPPED
            handle = await start(provider, handle, launch(secret))
            handle = await start(provider, handle, launch(secret))  # idempotent
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
                await guest_client.health(provider.guest_endpoint(handle), secret, timeout=1)
            stopped = [r["message"] for r in await provider.tail_stopped(handle, 1000)]
            assert "wrote-2" in stopped  # a stopped machine's log, from the provider
            assert (await provider.tail_stopped(handle, 2)) == (
                await provider.tail_stopped(handle, 1000)
            )[-2:]
            handle = await start(provider, handle, launch(secret))
            await wait_agent(provider, handle, secret)
            out = await shell_output(
                provider, handle, secret, "cat kept.txt; echo done-$((0+1))", "done-1"
            )
            assert "keep" in out  # the volume survived stop/start
            handle = await start(provider, handle, launch(secret), restart=True)
            second = await wait_agent(provider, handle, secret)
            assert second["startedAt"] != first["startedAt"]  # a fresh agent
            assert "wrote-2" in await messages(provider, handle, secret)
            await provider.destroy(handle)
            await provider.destroy(handle)  # idempotent
            assert (await provider.status(handle)).state is MachineState.MISSING

        run(scenario())

    def test_statuses_answer_as_status_does(self, provider: ComputeProvider) -> None:
        """The batch the reconciler asks once per pass: in the order asked, each machine as
        ``status`` sees it, running, at rest and gone alike."""
        secret = secrets.token_urlsafe(16)

        async def scenario() -> None:
            running = await provider.create(spec())
            resting = await provider.create(spec())
            gone = await provider.create(spec())
            try:
                running = await start(provider, running, launch(secret))
                await provider.destroy(gone)
                handles = [resting, running, gone, running]
                seen = await provider.statuses(handles)
                assert [s.state for s in seen if isinstance(s, MachineStatus)] == [
                    MachineState.STOPPED,
                    MachineState.RUNNING,
                    MachineState.MISSING,
                    MachineState.RUNNING,
                ], seen
                assert seen == [await provider.status(h) for h in handles]
                assert await provider.statuses([]) == []
            finally:
                for handle in (running, resting):
                    await provider.destroy(handle)

        run(scenario())

    def test_wrong_secret_is_refused(self, provider: ComputeProvider) -> None:
        secret = secrets.token_urlsafe(16)

        async def scenario() -> None:
            handle = await provider.create(spec())
            try:
                handle = await provider.start(handle, launch(secret)) or handle
                endpoint = provider.guest_endpoint(handle)
                # Booted, not yet configured: the guest knows the secret's hash, nothing else.
                assert (await guest_client.health(endpoint, secret))["configured"] is False
                with pytest.raises(guest_client.GuestError, match="unauthorized"):
                    await guest_client.health(endpoint, "wrong")
                config = guest_config(launch(secret), provider.guest_layout(handle, launch(secret)))
                with pytest.raises(guest_client.GuestError, match="unauthorized"):
                    await guest_client.configure(endpoint, "wrong", config)
            finally:
                await provider.destroy(handle)

        run(scenario())

    def test_logs_resume_from_a_cursor(self, provider: ComputeProvider) -> None:
        secret = secrets.token_urlsafe(16)

        async def scenario() -> None:
            handle = await provider.create(spec())
            try:
                handle = await start(provider, handle, launch(secret))
                await wait_agent(provider, handle, secret)
                endpoint = provider.guest_endpoint(handle)
                _, cursor = await guest_client.logs(endpoint, secret, lines=0)
                await shell_output(
                    provider, handle, secret, "echo line-a; echo line-b; echo fin-$((1+1))", "fin-2"
                )
                seen: list[tuple[str, str]] = []
                stream = await guest_client.follow(endpoint, secret, cursor=cursor)
                async with asyncio.timeout(10):
                    async for c, record in stream:
                        seen.append((c, record["message"]))
                        if record["message"] == "line-a":
                            break
                await stream.aclose()
                resume = await guest_client.follow(endpoint, secret, cursor=seen[-1][0])
                async with asyncio.timeout(10):
                    async for _c, record in resume:
                        assert record["message"] != "line-a"  # nothing repeated
                        if record["message"] == "line-b":
                            break
                await resume.aclose()
                # The cursor still resumes in the same place after a restart (the log is on
                # the volume): an SSE client that reconnects across it misses nothing.
                handle = await start(provider, handle, launch(secret), restart=True)
                await wait_agent(provider, handle, secret)
                endpoint = provider.guest_endpoint(handle)
                again = await guest_client.follow(endpoint, secret, cursor=seen[-1][0])
                async with asyncio.timeout(10):
                    async for _c, record in again:
                        assert record["message"] == "line-b"
                        break
                await again.aclose()
            finally:
                await provider.destroy(handle)

        run(scenario())

    def test_restart_from_stopped(self, provider: ComputeProvider) -> None:
        """Restarting a stopped machine starts it: the dashboard offers restart in any state."""
        secret = secrets.token_urlsafe(16)

        async def scenario() -> None:
            handle = await provider.create(spec())
            try:
                handle = await start(provider, handle, launch(secret))
                await wait_agent(provider, handle, secret)
                await provider.stop(handle)
                handle = await start(provider, handle, launch(secret), restart=True)
                assert (await provider.status(handle)).state is MachineState.RUNNING
                await wait_agent(provider, handle, secret)
            finally:
                await provider.destroy(handle)

        run(scenario())

    def test_operations_in_progress_are_not_failures(self, provider: ComputeProvider) -> None:
        """While an operation runs, ``status`` says where the machine is or that it is on its
        way (an in-progress state), never something that reads as a failure."""
        secret = secrets.token_urlsafe(16)
        S = MachineState

        async def scenario() -> None:
            handle = await provider.create(spec())
            starting, handle = await states_during(
                provider, handle, start(provider, handle, launch(secret))
            )
            stopping, _ = await states_during(provider, handle, provider.stop(handle))
            destroying, _ = await states_during(provider, handle, provider.destroy(handle))
            assert set(starting) <= {S.STOPPED, S.STARTING, S.RUNNING}, starting
            assert starting[-1] is S.RUNNING
            assert set(stopping) <= {S.RUNNING, S.STOPPING, S.STOPPED}, stopping
            assert stopping[-1] is S.STOPPED
            assert set(destroying) <= {S.STOPPED, S.DESTROYING, S.MISSING}, destroying
            assert destroying[-1] is S.MISSING
            assert all(s.in_progress for s in (S.STARTING, S.STOPPING, S.DESTROYING))
            assert not any(s.in_progress for s in (S.RUNNING, S.STOPPED, S.MISSING))
            if self.reports_its_operations:
                assert S.STARTING in starting, starting
                assert S.STOPPING in stopping, stopping
                assert S.DESTROYING in destroying, destroying

        run(scenario())

    def test_unreachable_from_elsewhere(
        self, provider: ComputeProvider, elsewhere: ComputeProvider
    ) -> None:
        """The server that made a machine can act on it; another host's server can too when
        the provider's machines are reachable from anywhere, and is told why not otherwise."""

        async def scenario() -> None:
            handle = await provider.create(spec())
            try:
                assert provider.unreachable(handle) is None
                why = elsewhere.unreachable(handle)
                if not self.machines_belong_to_a_host:
                    assert why is None
                    return
                assert why is not None
                assert handle.ref in why
                providers = Providers({provider.name: elsewhere}, provider.name)
                with pytest.raises(ProviderUnavailable, match=handle.ref):
                    providers.reachable(provider.name, handle)
            finally:
                await provider.destroy(handle)

        run(scenario())
