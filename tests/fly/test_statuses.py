"""Many machines' statuses at once: the organization's machine listing, in the fake and in the
fly provider's ``statuses``."""

from __future__ import annotations

from typing import Any

from gentity.providers.compute.base import MachineHandle, MachineState, MachineStatus
from gentity.providers.compute.fly.provider import FlyProvider
from tests.fly.conftest import FakeFly
from tests.fly.test_provider import make_provider
from tests.providers.contract import run, spec


async def _made(provider: FlyProvider, count: int) -> list[MachineHandle]:
    return [await provider.create(spec()) for _ in range(count)]


def test_the_organization_s_machines_come_page_by_page(fake: FakeFly) -> None:
    provider = make_provider(fake)

    async def scenario() -> None:
        handles = await _made(provider, 5)
        # Another organization's machine is not listed.
        await provider.api.create_app("other-org-app", "other", network="other-org-app")
        await provider.api.create_machine(
            "other-org-app",
            {"image": "x", "init": {"cmd": ["true"]}},
            region="iad",
            skip_launch=True,
        )
        listed = await provider.api.list_org_machines("personal", limit=2)
        assert sorted((m["app_name"], m["id"]) for m in listed) == sorted(
            (h.ref, h.data["machine"]) for h in handles
        )
        assert all(m["state"] == "created" and "config" not in m for m in listed)
        await provider.destroy(handles[0])
        remaining = {m["app_name"] for m in await provider.api.list_org_machines("personal")}
        assert handles[0].ref not in remaining
        for handle in handles[1:]:
            await provider.destroy(handle)
        await provider.close()

    run(scenario())


def test_statuses_ask_the_listing_and_each_machine_only_when_unlisted(
    fake: FakeFly, monkeypatch: Any
) -> None:
    provider = make_provider(fake)
    asked: list[str] = []
    one = FlyProvider.status

    async def status(self: FlyProvider, handle: MachineHandle) -> MachineStatus:
        asked.append(handle.ref)
        return await one(self, handle)

    monkeypatch.setattr(FlyProvider, "status", status)

    async def scenario() -> None:
        handles = await _made(provider, 3)
        gone = handles.pop()
        await provider.destroy(gone)
        seen = await provider.statuses([*handles, gone])
        assert seen == [
            MachineStatus(MachineState.STOPPED),
            MachineStatus(MachineState.STOPPED),
            MachineStatus(MachineState.MISSING),
        ]
        assert asked == [gone.ref]  # the listed ones came from the listing
        # Should the listing fail, each machine is asked on its own: the same answers.
        asked.clear()
        fake.fault("GET", "^/v1/orgs/personal/machines$", respond={"status": 500})
        assert await provider.statuses([*handles, gone]) == seen
        assert sorted(asked) == sorted(h.ref for h in [*handles, gone])
        for handle in handles:
            await provider.destroy(handle)
        await provider.close()

    run(scenario())
