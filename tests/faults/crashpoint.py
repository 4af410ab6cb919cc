"""``python -m tests.faults.crashpoint serve …``: ``gentity serve`` that holds operations at a
named step, so that a test can ``kill -9`` it exactly there.

A step is a provider call (of ``GENTITY_COMPUTE_PROVIDER``, ``local`` or ``fly``) and a side of
it: ``create``, ``start``, ``stop``, ``restart`` or ``destroy``, then ``:before`` or ``:after``.
The test arms an instance by writing the step into ``$GENTITY_TEST_CRASH_DIR/<instance id>``; a
create, whose id nobody knows in advance, claims one ``new-<n>`` file instead (renamed to its id
when the create begins). An operation that reaches its armed step writes
``<instance id>.reached`` and waits for ever. Nothing else differs from ``gentity serve``: the
server, its database and its instances are real."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from gentity.cli.main import main
from gentity.providers.compute.base import ComputeProvider, MachineHandle, MachineSpec
from gentity.providers.compute.fly.provider import FlyProvider
from gentity.providers.compute.local.provider import LocalProvider

OPERATIONS = ("create", "start", "stop", "restart", "destroy")


def armed(crash_dir: Path, instance_id: str, step: str) -> bool:
    if step == "create:before":
        for pending in sorted(crash_dir.glob("new-*")):
            with contextlib.suppress(FileNotFoundError):
                pending.rename(crash_dir / instance_id)
                break
    try:
        return (crash_dir / instance_id).read_text().strip() == step
    except FileNotFoundError:
        return False


async def hold(crash_dir: Path, instance_id: str) -> None:
    reached = crash_dir / f"{instance_id}.reached"
    temporary = reached.with_suffix(".tmp")
    temporary.write_text("")
    os.replace(temporary, reached)  # the test sees the file only once it is whole
    await asyncio.Event().wait()


def instance_of(target: MachineSpec | MachineHandle) -> str:
    """The instance a provider call is about: a fly handle names the instance's app."""
    if isinstance(target, MachineSpec):
        return target.instance_id
    return target.ref.removeprefix(os.environ.get("GENTITY_FLY_APP_PREFIX", "gentity-"))


def holding(crash_dir: Path, provider: type[ComputeProvider], name: str) -> None:
    original: Callable[..., Awaitable[Any]] = getattr(provider, name)

    @functools.wraps(original)
    async def held(self: ComputeProvider, target: MachineSpec | MachineHandle, *args: Any) -> Any:
        instance_id = instance_of(target)
        if armed(crash_dir, instance_id, f"{name}:before"):
            await hold(crash_dir, instance_id)
        result = await original(self, target, *args)
        if armed(crash_dir, instance_id, f"{name}:after"):
            await hold(crash_dir, instance_id)
        return result

    setattr(provider, name, held)


if __name__ == "__main__":
    chosen = FlyProvider if os.environ.get("GENTITY_COMPUTE_PROVIDER") == "fly" else LocalProvider
    for operation in OPERATIONS:
        holding(Path(os.environ["GENTITY_TEST_CRASH_DIR"]), chosen, operation)
    main()
