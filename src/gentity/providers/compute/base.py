"""The compute provider interface.

A provider turns an instance row into a machine: somewhere to run the guest daemon with a
persistent volume. Every provider must pass ``tests/providers/contract.py``.

Lifecycle, as the control plane drives it::

    create ──▶ start ──▶ (stop ──▶ start)* ──▶ destroy
                 └──── restart ────┘

The provider knows nothing about users, the database or HTTP. It gets a :class:`MachineSpec`
once, hands back a :class:`MachineHandle` that the control plane stores on the instance row, and
from then on receives that handle. Secrets (the guest secret, the model API key) arrive in a
:class:`GuestLaunch` on every start and must never be written to disk, logged, put on a command
line or into a machine config the provider's API would show back.

A provider only boots the guest daemon, from a bootstrap without secrets (see
:mod:`gentity.guest.config`). Everything else goes through the guest protocol, the same on
every provider: the control plane sends the agent's config with :func:`guest_config` after
every boot, and reads logs, health and terminals from the guest while the machine runs. Only a
stopped machine's log comes from the provider (:meth:`ComputeProvider.tail_stopped`).
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import PurePosixPath
from typing import Any, ClassVar

from gentity.catalog import InstallStep
from gentity.guest.client import GuestEndpoint
from gentity.guest.config import ReadyRule
from gentity.guest.seeds import PreparePlan

KnownInstances = Callable[[], Awaitable[Collection[str]]]
"""Reads the ids of every instance the database still holds (see ``ComputeProvider.sweep``)."""

STATUS_CONCURRENCY = 16
"""At most this many :meth:`ComputeProvider.status` calls at once in the default
:meth:`ComputeProvider.statuses`: a pass over thousands of machines must neither ask one at a
time nor open thousands of requests at once."""


class ProviderError(Exception):
    """The provider could not do what was asked; the message is safe to show the user.

    The HTTP layer maps it to ``502`` with ``{"error": message}`` (see ``server.errors``).
    """


class ProviderUnavailable(Exception):
    """This server cannot act on the machine: its provider is not enabled here, or the machine
    belongs to another host (see :meth:`ComputeProvider.unreachable`). The message says which,
    for the user.

    Not a :class:`ProviderError`: nothing happened to the machine, so nothing about it may be
    recorded (no ``error`` status); the HTTP layer answers ``503`` and another server can act.
    """


@dataclass(frozen=True)
class GuestLaunch:
    """What the guest daemon needs to run the agent. Carries secrets: never log or persist it."""

    agent: str
    """The catalog id of the agent (``shell``, ``claude-code``…)."""
    command: list[str]
    secret: str = field(repr=False)
    """The per-instance secret the guest demands from every caller."""
    agent_env: dict[str, str] = field(repr=False, default_factory=dict)
    """Extra environment for the agent only, e.g. ``ANTHROPIC_API_KEY``."""
    install: InstallStep | None = None
    restart: str = "always"
    ready: ReadyRule = field(default_factory=ReadyRule)
    """When the agent counts as ready (the catalog's rule); reported by the guest's health."""
    secret_env: tuple[str, ...] = ()
    """The names in ``agent_env`` whose values are secrets (the catalog's key variable). The
    guest gets them as ``secretEnv`` and redacts those values from the instance's log."""
    workdir: str = ""
    """The agent's working directory, relative to its home (empty: the home); the guest
    makes it."""
    prepare: PreparePlan = field(repr=False, default_factory=PreparePlan)
    """What the guest prepares before the first start (the config's ``prepare`` object)."""

    def secret_values(self) -> list[str]:
        """Every value the instance's log must never show: the guest secret and the keys.

        For logs a provider writes itself (e.g. install output), with
        :class:`gentity.guest.redact.Redactor`.
        """
        return [self.secret, *(self.agent_env[n] for n in self.secret_env if n in self.agent_env)]


@dataclass(frozen=True)
class GuestLayout:
    """Where the agent lives inside a provider's machine, as its guest sees it."""

    workdir: str
    """The agent's home, on the volume; the launch's ``workdir`` is below it."""
    log_file: str
    """The structured log (on the volume, so it outlives a restart)."""
    env: dict[str, str]
    """The agent's base environment (``HOME``, ``PATH``…); the launch's ``agent_env`` is added."""
    install: dict[str, Any] | None = None
    """The guest's own one-time install (``configure``'s ``install`` object), for a provider
    whose guest installs the agent itself; None when the provider installed it before boot."""
    shell: list[str] = field(default_factory=lambda: ["bash", "-l"])


def guest_config(launch: GuestLaunch, layout: GuestLayout) -> dict[str, Any]:
    """The ``configure`` config for the guest: the one place it is put together, for every
    provider. Carries the launch's secrets: send it over the guest protocol only."""
    return {
        "logFile": layout.log_file,
        "workdir": str(PurePosixPath(layout.workdir, launch.workdir)),
        "command": launch.command,
        "shell": layout.shell,
        "env": {**layout.env, **launch.agent_env},
        "secretEnv": list(launch.secret_env),
        "restart": launch.restart,
        "ready": {"quietMs": launch.ready.quiet_ms, "pattern": launch.ready.pattern},
        "install": layout.install,
        "prepare": launch.prepare.to_json(),
        "root": layout.workdir,
    }


@dataclass(frozen=True)
class MachineSpec:
    """What to create, from the catalog defaults and the user's request."""

    instance_id: str
    subdomain: str
    cpus: int
    memory_mb: int
    volume_gb: int
    region: str | None = None


@dataclass(frozen=True)
class Region:
    """A place where a provider runs machines."""

    code: str
    """What a create request's ``region`` names (``iad``, ``local``…)."""
    label: str
    """The place in words, for a picker."""


@dataclass(frozen=True)
class MachineHandle:
    """The provider's reference to a machine, stored on the instance row as JSON."""

    ref: str
    data: dict[str, Any] = field(default_factory=dict)


class MachineState(StrEnum):
    """What the provider sees, independent of what the control plane believes.

    ``STARTING``, ``STOPPING`` and ``DESTROYING`` mean an operation is in progress, not a
    failure: whoever watches (the reconciler) looks again later instead of concluding that the
    machine died. A provider reports them as far as it can see them (a cloud API says so; the
    local provider knows its own operations in flight).
    """

    RUNNING = "running"
    """The machine is up and its guest daemon answers."""
    STOPPED = "stopped"
    """The machine exists (with its volume) but nothing runs."""
    MISSING = "missing"
    """The provider has no such machine (destroyed, or never created)."""
    STARTING = "starting"
    """Booting: on its way to ``RUNNING``."""
    STOPPING = "stopping"
    """Shutting down: on its way to ``STOPPED``."""
    DESTROYING = "destroying"
    """Being removed: on its way to ``MISSING``."""

    @property
    def in_progress(self) -> bool:
        """An operation is under way; the state will change by itself."""
        return self in _IN_PROGRESS


_IN_PROGRESS = frozenset((MachineState.STARTING, MachineState.STOPPING, MachineState.DESTROYING))


@dataclass(frozen=True)
class MachineStatus:
    state: MachineState
    detail: str | None = None
    """Why, in words, when the state is not what one would expect (e.g. how a process died)."""


class ComputeProvider(abc.ABC):
    """Create, start, stop, restart and destroy machines.

    All methods are coroutines and must not block the event loop. Every method other than
    ``create`` is idempotent: stopping a stopped machine, or destroying a missing one, succeeds.
    Failures raise :class:`ProviderError`.
    """

    name: ClassVar[str]

    @abc.abstractmethod
    async def create(self, spec: MachineSpec) -> MachineHandle:
        """Allocate the machine and its volume, without starting anything."""

    @abc.abstractmethod
    async def start(self, handle: MachineHandle, launch: GuestLaunch) -> MachineHandle | None:
        """Boot the machine and its guest daemon, bootstrapped for ``launch.secret`` (its
        sha256 only: the secrets themselves never go into the machine's definition).

        Returns once the guest daemon answers health on :meth:`guest_endpoint`; the caller then
        sends it :func:`guest_config`, and whether the agent came up is the guest's to report.
        Starting a running machine is a no-op.

        Returns the machine's new handle when starting changed it (a cloud provider may have
        replaced the machine, or learnt its address), which the caller stores in place of the
        old one; None when the handle is unchanged.
        """

    @abc.abstractmethod
    async def stop(self, handle: MachineHandle) -> None:
        """Stop every process of the machine, keeping the volume. Idempotent."""

    async def restart(self, handle: MachineHandle, launch: GuestLaunch) -> MachineHandle | None:
        """Stop, then start; from a stopped machine, just start. Returns as :meth:`start` does.

        Providers with a native restart may do better."""
        await self.stop(handle)
        return await self.start(handle, launch)

    @abc.abstractmethod
    async def destroy(self, handle: MachineHandle) -> None:
        """Remove the machine and its volume for good. Idempotent."""

    @abc.abstractmethod
    async def destroy_unrecorded(self, instance_id: str) -> None:
        """Remove whatever a :meth:`create` for ``instance_id`` made before it returned its
        handle (it was cancelled, or the server died, before the handle was saved). Idempotent;
        nothing to do for a provider whose create makes nothing until it returns."""

    @abc.abstractmethod
    async def status(self, handle: MachineHandle) -> MachineStatus:
        """What the machine is doing right now."""

    async def statuses(
        self, handles: Sequence[MachineHandle]
    ) -> list[MachineStatus | ProviderError]:
        """:meth:`status` of many machines at once, in the order of ``handles``; a machine whose
        status could not be read has its :class:`ProviderError` in its place instead (one
        failure does not fail the others).

        The reconciler asks this once per pass for every machine it checks. The default asks
        :meth:`status` for each, :data:`STATUS_CONCURRENCY` at a time; a provider that can
        answer for many machines in one call (a list endpoint, its own process table) should
        do so. Whatever the batch cannot vouch for (a machine missing from a listing that may
        lag) it asks :meth:`status` for, so the answers are the same as one by one."""
        return await status_each(self, handles)

    def regions(self) -> list[Region]:
        """Where this provider can run machines; a create naming any other region is refused.

        Empty (the default) when the provider does not say: any region is then passed on as
        given. Cheap and without I/O: asked on every create.
        """
        return []

    def unreachable(self, handle: MachineHandle) -> str | None:
        """None when this server can act on the machine; else why not, for the user.

        A provider whose machines are reachable from anywhere (a cloud API) keeps this default.
        One whose machines live on a host (``local``) names the host that runs it and this one:
        the server then answers ``503`` with the message, and its reconciler leaves the machine
        to the host that runs it. Cheap and without I/O: asked before every operation.
        """
        return None

    @abc.abstractmethod
    def guest_endpoint(self, handle: MachineHandle) -> GuestEndpoint:
        """Where the control plane reaches the guest (``unix:``, ``tcp:`` or ``tls:``), with
        the TLS context that verifies it when it is behind a TLS-terminating proxy."""

    @abc.abstractmethod
    def guest_layout(self, handle: MachineHandle, launch: GuestLaunch) -> GuestLayout:
        """Where the agent's workdir and log are in this provider's machines, its base
        environment and whether the guest installs the agent itself."""

    @abc.abstractmethod
    async def tail_stopped(self, handle: MachineHandle, lines: int) -> list[dict[str, str]]:
        """The last ``lines`` log records of a machine that is not running, oldest first
        (a running machine's log is read through its guest)."""

    def isolation_warnings(self) -> list[str]:
        """What this provider cannot enforce here, in words for an operator (e.g. a missing
        sandbox tool). Shown at start-up and by ``GET /readyz``."""
        return []

    async def verify(self) -> None:  # noqa: B027 (optional hook, empty by default)
        """Checked once before ``gentity serve`` starts: that the provider can work at all (its
        credentials, its API). :class:`ProviderError` saying why, in one line, stops the server.
        """

    async def sweep(self, known_instance_ids: KnownInstances) -> list[str]:
        """Remove machines this provider holds for instances that no longer exist (a create
        killed before its row knew the machine); return what was removed, in words. Called by
        the reconciler now and then. ``known_instance_ids`` reads the database: call it after
        listing the provider's machines, so one created meanwhile is known. Nothing by default
        (``local`` finds its leftovers from its own data directory at start-up)."""
        return []

    async def adopt(self) -> None:  # noqa: B027 (optional hook, empty by default)
        """Called once at server start-up: pick up machines a previous process left running."""

    async def close(self) -> None:  # noqa: B027 (optional hook, empty by default)
        """Release clients and background tasks. Machines keep running."""


async def status_each(
    provider: ComputeProvider, handles: Sequence[MachineHandle]
) -> list[MachineStatus | ProviderError]:
    """``provider.status`` of each handle, at most :data:`STATUS_CONCURRENCY` at once."""
    limit = asyncio.Semaphore(STATUS_CONCURRENCY)

    async def one(handle: MachineHandle) -> MachineStatus | ProviderError:
        async with limit:
            try:
                return await provider.status(handle)
            except ProviderError as exc:
                return exc

    return list(await asyncio.gather(*(one(handle) for handle in handles)))
