"""Watching a new instance start: its id at once, then its log under the spinner until it runs.

``compute create`` asks the server not to wait (``wait=0``, answered as soon as the instance
exists), prints the id, and then follows two streams of the instance at once: its log, whose
lines (the install's, the preparation's, the agent's first ones) are printed as they come, and
its status events, which say when the start has ended, ``running`` or ``error``. No polling.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from dataclasses import dataclass

from rich.text import Text

from gentity import models
from gentity.cli.output import err_console, note, spinner
from gentity.client import ApiError, AsyncClient
from gentity.client.calls import CREATE_TIMEOUT

#: Statuses that end a start: the instance runs, or it will not without someone acting.
_SETTLED = frozenset(
    {
        models.InstanceStatus.RUNNING,
        models.InstanceStatus.ERROR,
        models.InstanceStatus.STOPPED,
        models.InstanceStatus.DESTROYING,
        models.InstanceStatus.DESTROYED,
    }
)
_LEVEL_STYLES = {"error": "red", "warn": "yellow"}
MAX_LINES = 1000  # the most a log request gives


@dataclass(frozen=True)
class CreateRequest:
    agent: models.Agent
    model: models.AgentModel
    api_key: str | None
    name: str | None
    region: str | None
    env: Mapping[str, str] | None
    repo: str | None
    auto_stop_minutes: int | None = None
    restart_policy: str | None = None


class StillStarting(Exception):
    """The server's time for a start passed and the instance had not settled."""

    def __init__(self, created: models.InstanceCreated) -> None:
        super().__init__(created.id)
        self.created = created


def create_and_watch(request: CreateRequest) -> tuple[models.InstanceCreated, models.Instance]:
    """Create the instance, print its id, stream its log until it settles; the instance then.

    Ctrl-C stops the watching, not the start (which the server carries on)."""
    return asyncio.run(_create_and_watch(request))


async def _create_and_watch(
    request: CreateRequest,
) -> tuple[models.InstanceCreated, models.Instance]:
    agent, model = request.agent, request.model
    async with AsyncClient() as client:
        with spinner(f"Creating {agent.name} ({model.provider}/{model.name})…") as status:
            created = await client.instances.create(
                agent.id,
                model.provider,
                model.name,
                api_key=request.api_key,
                name=request.name,
                region=request.region,
                env=request.env,
                repo=request.repo,
                auto_stop_minutes=request.auto_stop_minutes,
                restart_policy=request.restart_policy,
                wait=False,
            )
            note(f"Creating {created.id} ({created.subdomain}); its log follows.")
            status.update(Text(f"Starting {created.id}…"))
            printer = _LogPrinter(client, created.id)
            try:
                async with asyncio.timeout(CREATE_TIMEOUT):
                    await _settled(client, created.id, printer)
            except TimeoutError:
                raise StillStarting(created) from None
            finally:
                await printer.stop()
            await printer.catch_up()
        return created, await client.instances.get(created.id)


async def _settled(client: AsyncClient, instance_id: str, printer: _LogPrinter) -> None:
    async with client.instances.follow_events(instance_id) as events:
        async for event in events:
            if event.to_status is not models.InstanceStatus.PROVISIONING:
                printer.start()  # the machine exists from `starting` on, and with it the log
            if event.to_status in _SETTLED:
                return


class _LogPrinter:
    """Prints the instance's log from its first line, as it is written."""

    def __init__(self, client: AsyncClient, instance_id: str) -> None:
        self._client = client
        self._id = instance_id
        self._task: asyncio.Task[None] | None = None
        self._printed = 0

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._follow())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def catch_up(self) -> None:
        """Print what the stream had not brought yet: the status can settle before the last
        lines arrive (a quick start, the install's error). The log is append-only."""
        if self._task is None:
            return
        try:
            records = await self._client.instances.logs(self._id, MAX_LINES)
        except ApiError:
            return  # e.g. destroyed meanwhile; the status says what happened
        if len(records) < MAX_LINES:
            for record in records[self._printed :]:
                _print(record)

    async def _follow(self) -> None:
        # All of it: the instance is new, so its whole log is this start's. Showing it is a
        # courtesy: a stream that fails leaves the outcome to the status, and catch_up prints.
        with contextlib.suppress(ApiError):
            async with self._client.instances.follow_logs(self._id, lines=MAX_LINES) as records:
                async for record in records:
                    _print(record)
                    self._printed += 1


def _print(record: models.LogLine) -> None:
    line = Text(f"  {record.message}", style=_LEVEL_STYLES.get(record.level, "dim"))
    err_console.print(line, highlight=False, soft_wrap=True)
