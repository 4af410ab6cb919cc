"""Instances: create, list, act on, destroy, as the API asks.

Each long step (create, start, stop, restart, destroy) runs as an operation
(``services.operations``): it keeps running when the client that asked for it goes away (a
closed laptop must not leave an instance half-started), under a lease the reconciler watches.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from pydantic import ValidationError
from sqlalchemy import bindparam, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from gentity import models
from gentity.catalog import WORKDIR, CatalogAgent, CatalogModel
from gentity.guest import client as guest_client
from gentity.guest.seeds import PreparePlan, check_repo_url
from gentity.models import InstanceAction
from gentity.models import InstanceStatus as S
from gentity.providers.compute.base import (
    ComputeProvider,
    GuestLaunch,
    MachineHandle,
    MachineSpec,
    ProviderError,
    ProviderUnavailable,
    guest_config,
)
from gentity.server.context import AppContext
from gentity.server.db.ids import new_id, random_slug
from gentity.server.db.orm import Instance
from gentity.server.services import dns
from gentity.server.services.accounts import Reader
from gentity.server.services.errors import (
    Conflict,
    InvalidInput,
    NotFound,
    Unavailable,
    UpstreamFailed,
)
from gentity.server.services.instance_status import (
    TransitionError,
    action_step,
    record_creation,
    set_status,
)
from gentity.server.services.operations import (
    in_flight_here,
    owner,
    release,
    run_operation,
    settle,
)

log = logging.getLogger(__name__)

AGENT_READY_TIMEOUT = 30.0
#: Asking guests for the agent's health: per guest, how many at once, and for a whole list.
HEALTH_TIMEOUT = 2.0
HEALTH_CONCURRENCY = 16
HEALTH_LIST_BUDGET = 3.0
_SUBDOMAIN_ATTEMPTS = 8


class Listed(NamedTuple):
    """An instance as the API's reads need it: the columns of its wire form, and what asking
    its guest for the agent's health takes. Read with a Core ``SELECT`` of these columns only:
    loading an ORM object (identity map, state tracking) cost several times as much a row, and
    a list reads a hundred of them."""

    id: str
    name: str
    subdomain: str
    agent_type: str
    model_provider: str
    model_name: str
    region: str | None
    status: str
    error_message: str | None
    created_at: datetime
    updated_at: datetime
    auto_stop_minutes: int
    last_activity_at: datetime | None
    restart_policy: str
    operation_owner: str | None
    provider: str
    provider_ref: str | None
    provider_state: dict[str, Any]
    guest_secret_ciphertext: bytes


#: A row the read paths take: the ORM object of a write path, or a :class:`Listed` one.
InstanceRow = Instance | Listed

_instances = Instance.__table__
_LIVE_OF_USER = (_instances.c.user_id == bindparam("user_id"), _instances.c.destroyed_at.is_(None))
# Built once: a request only binds its values (no statement to build, a cached compilation).
# LIST is public for the benchmark's floor (bench/floors.py), which runs the same query.
LIST = (
    select(*(_instances.c[name] for name in Listed._fields))
    .where(*_LIVE_OF_USER)
    .order_by(_instances.c.created_at.desc(), _instances.c.id)
)
_READ_ONE = select(*(_instances.c[name] for name in Listed._fields)).where(
    *_LIVE_OF_USER, _instances.c.id == bindparam("instance_id")
)


async def _read(db: Reader, statement: Any, params: dict[str, Any]) -> list[Listed]:
    # As a Core statement, on the session's connection or ``db``: no ORM execution around it.
    connection = await db.connection() if isinstance(db, AsyncSession) else db
    result = await connection.execute(statement, params)
    return [Listed._make(row) for row in result]


def to_wire(row: InstanceRow, minute: timedelta = timedelta(minutes=1)) -> models.Instance:
    """The row as the API shows it; ``minute`` is how long an auto-stop minute lasts
    (``GENTITY_AUTO_STOP_MINUTE_SECONDS``)."""
    return models.Instance(
        id=row.id,
        name=row.name,
        subdomain=row.subdomain,
        agent_type=row.agent_type,
        model_provider=row.model_provider,
        model_name=row.model_name,
        region=row.region,
        status=S(row.status),
        error_message=row.error_message,
        created_at=row.created_at,
        updated_at=row.updated_at,
        auto_stop_minutes=row.auto_stop_minutes,
        auto_stop_at=auto_stop_at(row, minute),
        restart_policy=models.RestartPolicy(row.restart_policy),
    )


def auto_stop_at(row: InstanceRow, minute: timedelta) -> datetime | None:
    """When a running instance stops if nothing more happens in it: a pure function of its row
    (the idle check keeps ``last_activity_at`` current), so reading it asks no guest."""
    if row.status != S.RUNNING or row.auto_stop_minutes <= 0 or row.last_activity_at is None:
        return None
    return row.last_activity_at + row.auto_stop_minutes * minute


async def agent_health(ctx: AppContext, row: InstanceRow) -> models.AgentHealth | None:
    """The agent's health from its guest; None unless the instance runs (or its agent is being
    restarted) and its guest answers in time (the instance's status stays the truth about the
    machine)."""
    if not guest_serves(ctx, row):
        return None
    known, health = _health_at_hand(ctx, row)
    return health if known else await _ask_guest(ctx, row)


def _health_at_hand(ctx: AppContext, row: InstanceRow) -> tuple[bool, models.AgentHealth | None]:
    """The agent's health of a row whose guest serves, when it is known without a round trip
    (``(True, health)``): what its live watch last heard, or None when there is no machine or
    this server cannot reach it. ``(False, None)`` when its guest must be asked."""
    if row.provider_ref is None:
        return True, None
    heard = _heard_by_watch(ctx, row.id)
    if heard is not None:
        try:
            return True, models.AgentHealth.model_validate(heard.get("agent"))
        except ValidationError:
            return True, None
    try:
        provider_for(ctx, row)
    except (ProviderError, ProviderUnavailable):
        return True, None
    return False, None


async def _ask_guest(ctx: AppContext, row: InstanceRow) -> models.AgentHealth | None:
    try:
        endpoint = provider_for(ctx, row).guest_endpoint(handle_of(row))
        info = await guest_client.health(endpoint, guest_secret(ctx, row), timeout=HEALTH_TIMEOUT)
        return models.AgentHealth.model_validate(info.get("agent"))
    except (guest_client.GuestError, ProviderError, ProviderUnavailable, ValidationError):
        return None


def _heard_by_watch(ctx: AppContext, instance_id: str) -> dict[str, Any] | None:
    """What the instance's live watch (``server.recovery``) last heard from its guest, unless
    an operation here is changing the guest meanwhile. The guest answers its watch at every
    change, so this is as current as asking it, without a round trip per instance."""
    task = ctx.watches.get(instance_id)
    if task is None or task.done() or in_flight_here(ctx, instance_id):
        return None
    return ctx.heard.get(instance_id)


async def to_wire_with_health(
    ctx: AppContext, rows: Sequence[InstanceRow]
) -> list[models.Instance]:
    """Wire instances with their agents' health: what each live watch last heard, or else
    asked of their guests concurrently (at most HEALTH_CONCURRENCY at once; whatever has not
    answered within HEALTH_LIST_BUDGET is null)."""
    minute = timedelta(seconds=ctx.settings.auto_stop_minute_seconds)
    wires = [to_wire(row, minute) for row in rows]
    # Only the guests nobody watches are asked, each in a task; the rest is known here.
    asking: list[tuple[models.Instance, asyncio.Task[models.AgentHealth | None]]] = []
    limit = asyncio.Semaphore(HEALTH_CONCURRENCY)

    async def ask(row: InstanceRow) -> models.AgentHealth | None:
        async with limit:
            return await _ask_guest(ctx, row)

    for wire, row in zip(wires, rows, strict=True):
        if not guest_serves(ctx, row):
            continue
        known, health = _health_at_hand(ctx, row)
        if known:
            wire.agent = health
        else:
            asking.append((wire, asyncio.create_task(ask(row))))
    if asking:
        _, pending = await asyncio.wait([task for _, task in asking], timeout=HEALTH_LIST_BUDGET)
        for task in pending:
            task.cancel()
        for wire, task in asking:
            if task.done() and not task.cancelled():
                wire.agent = task.result()
    return wires


def guest_serves(ctx: AppContext, row: InstanceRow) -> bool:
    """Whether the instance's guest runs and serves its log and terminals: the instance is
    ``running``, or ``restarting`` because its guest restarts the agent (no operation under
    way, see ``server.recovery``)."""
    if row.status == S.RUNNING.value:
        return True
    return (
        row.status == S.RESTARTING.value
        and row.operation_owner is None
        and not in_flight_here(ctx, row.id)
    )


def handle_of(row: InstanceRow) -> MachineHandle:
    if row.provider_ref is None:
        raise ProviderError("the instance has no machine")
    return MachineHandle(ref=row.provider_ref, data=dict(row.provider_state or {}))


async def list_for(db: Reader, user_id: str) -> list[Listed]:
    """The user's live instances, newest first, as the list shows them."""
    return await _read(db, LIST, {"user_id": user_id})


async def read_owned(db: Reader, user_id: str, instance_id: str) -> Listed:
    """The caller's live instance as a read shows it; ``NotFound`` alike whether missing or
    someone else's."""
    found = await _read(db, _READ_ONE, {"user_id": user_id, "instance_id": instance_id})
    if not found:
        raise NotFound()
    return found[0]


async def find_owned(
    db: AsyncSession, user_id: str, *, instance_id: str | None = None, subdomain: str | None = None
) -> Instance | None:
    """The user's live instance with that id or subdomain, or None."""
    query = select(Instance).where(Instance.user_id == user_id, Instance.destroyed_at.is_(None))
    if instance_id is not None:
        query = query.where(Instance.id == instance_id)
    if subdomain is not None:
        query = query.where(Instance.subdomain == subdomain)
    found: Instance | None = await db.scalar(query)
    return found


async def get_owned(db: AsyncSession, user_id: str, instance_id: str) -> Instance:
    """The caller's live instance; ``NotFound`` alike whether missing or someone else's."""
    row = await find_owned(db, user_id, instance_id=instance_id)
    if row is None:
        raise NotFound()
    return row


# --- create --------------------------------------------------------------------------------


def _validate(
    ctx: AppContext, body: models.InstanceCreateRequest
) -> tuple[CatalogAgent, CatalogModel]:
    agent = ctx.catalog.get(body.agent_type)
    if agent is None:
        known = ", ".join(a.id for a in ctx.catalog.agents)
        raise InvalidInput(f"agentType: unknown agent {body.agent_type!r} (known: {known})")
    model = agent.model(body.model_provider, body.model_name)
    if model is None:
        choices = ", ".join(f"{m.provider}/{m.name}" for m in agent.models)
        raise InvalidInput(
            f"modelName: {body.model_provider}/{body.model_name} is not a model of {agent.id} "
            f"(choose one of: {choices})",
        )
    if model.api_key_env and not (body.api_key and body.api_key.strip()):
        raise InvalidInput(f"apiKey: required for {agent.name} with {model.provider} models")
    regions = [r.code for r in ctx.providers.default.regions()]
    if body.region is not None and regions and body.region not in regions:
        raise InvalidInput(
            f"region: unknown region {body.region!r} (choose one of: {', '.join(regions)})"
        )
    if body.repo is not None:
        schemes = ("https", "file") if ctx.settings.allow_file_repos else ("https",)
        try:
            check_repo_url(body.repo, schemes)
        except ValueError as exc:
            raise InvalidInput(str(exc)) from None
    return agent, model


async def create(
    ctx: AppContext,
    db: AsyncSession,
    user_id: str,
    body: models.InstanceCreateRequest,
    *,
    wait: bool = True,
) -> models.InstanceCreated:
    """Create the instance's row, then start it: until it runs (a failure raises), or, without
    ``wait``, in the background (the answer is the new row, ``provisioning``)."""
    agent, model = _validate(ctx, body)
    instance_id = new_id()
    api_key = body.api_key.strip() if body.api_key and model.api_key_env else None
    row = Instance(
        id=instance_id,
        user_id=user_id,
        name=body.name.strip()
        if body.name and body.name.strip()
        else f"{agent.name} - {model.name}",
        agent_type=agent.id,
        model_provider=model.provider,
        model_name=model.name,
        region=body.region,
        cpus=agent.default_cpus,
        memory_mb=agent.default_memory_mb,
        volume_gb=agent.default_volume_gb,
        status=S.PROVISIONING.value,
        provider=ctx.providers.default.name,
        provider_state={},
        api_key_ciphertext=ctx.box.encrypt(api_key, context=instance_id) if api_key else None,
        guest_secret_ciphertext=ctx.box.encrypt(secrets.token_urlsafe(32), context=instance_id),
        env_ciphertext=ctx.box.encrypt(json.dumps(body.env), context=instance_id)
        if body.env
        else None,
        repo=body.repo,
        auto_stop_minutes=ctx.settings.auto_stop_minutes
        if body.auto_stop_minutes is None
        else body.auto_stop_minutes,
        restart_policy=body.restart_policy.value,
        # Its create starts right away: the row names this server as the operation's owner
        # from its first write (see run_operation's ``owned``).
        operation_owner=owner(ctx),
    )
    for _attempt in range(_SUBDOMAIN_ATTEMPTS):
        row.subdomain = f"{agent.subdomain_prefix}-{random_slug(6)}"
        db.add(row)
        await record_creation(db, row, "created")
        try:
            await db.commit()
            break
        except IntegrityError:
            await db.rollback()
    else:
        raise Unavailable("could not allocate a unique subdomain; try again")

    async def provision(session: AsyncSession, inst: Instance) -> None:
        provider = provider_for(ctx, inst)
        # The record first: a DNS failure then fails the create with nothing else made yet.
        await dns.ensure_record(ctx, inst)
        spec = MachineSpec(
            instance_id=inst.id,
            subdomain=inst.subdomain,
            cpus=inst.cpus,
            memory_mb=inst.memory_mb,
            volume_gb=inst.volume_gb,
            region=inst.region,
        )
        handle = await provider.create(spec)
        # The handle and `starting` land together: a row past `provisioning` has its machine.
        inst.provider_ref, inst.provider_state = handle.ref, dict(handle.data)
        await set_status(session, inst, S.STARTING, "machine created; booting")
        await session.commit()
        await _boot(ctx, session, inst, restart=False)

    if not wait:
        # The operation runs to its end whatever happens to this request (run_operation
        # shields it); how it ends is the instance's status, its events and its log.
        task = asyncio.create_task(run_operation(ctx, instance_id, provision, owned=True))
        ctx.background.add(task)
        task.add_done_callback(ctx.background.discard)
        task.add_done_callback(_log_unexpected)
        return models.InstanceCreated(id=row.id, subdomain=row.subdomain, status=S.PROVISIONING)
    await run_operation(ctx, instance_id, provision, owned=True)
    await db.refresh(row)
    if row.status != S.RUNNING.value:
        raise UpstreamFailed(row.error_message or f"instance is {row.status}")
    return models.InstanceCreated(id=row.id, subdomain=row.subdomain, status=S.RUNNING)


def _log_unexpected(task: asyncio.Task[Any]) -> None:
    """A background create's end: its failures are already the instance's status, except one
    refused before it began (e.g. a destroy came first), which is logged here."""
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.warning("background create ended with %s: %s", type(exc).__name__, exc)


# --- actions -------------------------------------------------------------------------------


async def act(ctx: AppContext, db: AsyncSession, row: Instance, action: InstanceAction) -> None:
    provider_for(ctx, row)  # refused here when this server cannot reach the machine
    current = S(row.status)
    if action_step(current, action) is None or row.provider_ref is None:
        raise Conflict(f"cannot {action.value} the instance while it is {current.value}")
    if current is S.RESTARTING and (row.operation_owner is not None or in_flight_here(ctx, row.id)):
        # Only the agent's own restart (no operation under way) gives way to an action.
        raise Conflict(f"cannot {action.value} the instance while it is being restarted")

    async def operate(session: AsyncSession, inst: Instance) -> None:
        # Decided again on the row as this session reads it: it may have moved since.
        step = action_step(S(inst.status), action)
        if step is None:
            raise TransitionError(f"the instance is now {inst.status}")
        # The user takes over: no automatic restart is pending, and the count starts again.
        inst.recovery_attempts, inst.recover_at = 0, None
        await set_status(session, inst, step, f"{action.value} requested")
        await session.commit()
        if step is S.STOPPING:
            await provider_for(ctx, inst).stop(handle_of(inst))
            settle(inst)
            await set_status(session, inst, S.STOPPED, "stopped by request")
            await session.commit()
        else:
            await _boot(ctx, session, inst, restart=step is S.RESTARTING)

    await release(db)
    try:
        await run_operation(ctx, row.id, operate)
    except TransitionError as exc:
        raise Conflict(f"cannot {action.value} the instance now: {exc}") from exc
    await db.refresh(row)
    if row.status == S.ERROR.value:
        raise UpstreamFailed(row.error_message or "the instance failed")


async def destroy(ctx: AppContext, db: AsyncSession, row: Instance) -> None:
    """Destroy the instance, whatever it is doing: an operation in flight here (a create, start
    or restart) is cancelled first. Returns once machine and volume are gone; a second DELETE
    meanwhile waits for the first. A teardown that fails leaves the row ``destroying``
    (``UpstreamFailed`` with the provider's message) and is retried by the next DELETE or by
    the reconciler."""

    provider_for(ctx, row)  # refused here when this server cannot reach the machine

    async def operate(session: AsyncSession, inst: Instance) -> None:
        if S(inst.status) is not S.DESTROYING:
            await set_status(session, inst, S.DESTROYING, "destroy requested")
            await session.commit()
        await teardown(ctx, session, inst)

    await release(db)
    try:
        failure = await run_operation(ctx, row.id, operate, destroy=True)
    except TransitionError as exc:
        raise Conflict(f"cannot destroy the instance now: {exc}") from exc
    await db.refresh(row)
    if row.status != S.DESTROYED.value:
        raise UpstreamFailed(
            failure or "the instance could not be destroyed yet; it will be retried"
        )


async def teardown(ctx: AppContext, session: AsyncSession, inst: Instance) -> None:
    provider = provider_for(ctx, inst)
    if inst.provider_ref is not None:
        await provider.destroy(handle_of(inst))
    else:
        # A create cancelled (or killed) before it saved the handle may have made something.
        await provider.destroy_unrecorded(inst.id)
    await dns.remove_records(ctx, inst)
    # Nothing left to decrypt once the machine is gone.
    inst.api_key_ciphertext = inst.env_ciphertext = None
    settle(inst)
    await set_status(session, inst, S.DESTROYED, "machine and volume destroyed")
    await session.commit()


# --- booting -------------------------------------------------------------------------------


def guest_secret(ctx: AppContext, inst: InstanceRow) -> str:
    return ctx.box.decrypt(inst.guest_secret_ciphertext, context=inst.id)


def _launch(ctx: AppContext, inst: Instance) -> GuestLaunch:
    agent = ctx.catalog.get(inst.agent_type)
    if agent is None:
        raise ProviderError(f"agent {inst.agent_type!r} is no longer in the catalog")
    model = agent.model(inst.model_provider, inst.model_name)
    if model is None:
        raise ProviderError(f"model {inst.model_name!r} is no longer offered for {agent.id}")
    # Decrypted only here, into the launch that the provider hands to the guest. The user's
    # values are treated as secrets too (a token is a likely one): redacted from the log.
    user_env: dict[str, str] = (
        json.loads(ctx.box.decrypt(inst.env_ciphertext, context=inst.id))
        if inst.env_ciphertext
        else {}
    )
    api_key = (
        ctx.box.decrypt(inst.api_key_ciphertext, context=inst.id)
        if model.api_key_env and inst.api_key_ciphertext
        else None
    )
    agent_env = {**agent.env, **user_env}
    if model.api_key_env and api_key is not None:
        agent_env[model.api_key_env] = api_key
    return GuestLaunch(
        agent=agent.id,
        command=agent.launch_command(model),
        secret=guest_secret(ctx, inst),
        agent_env=agent_env,
        install=agent.install,
        restart=inst.restart_policy,
        secret_env=(*user_env, *((model.api_key_env,) if api_key is not None else ())),
        ready=agent.ready,
        workdir=WORKDIR,
        prepare=PreparePlan(
            files=list(agent.seed),
            values={
                "model": model.name,
                "provider": model.provider,
                # What Claude Code records of a key the user approved (its last 20 characters);
                # none of a key so short that those would be most of it.
                "api_key_suffix": api_key[-20:] if api_key and len(api_key) > 40 else "",
            },
            repo=inst.repo,
            git_init=agent.git_init,
        ),
    )


async def boot(ctx: AppContext, session: AsyncSession, inst: Instance) -> None:
    """Start a stopped (or failed) instance's machine, as a user's ``start`` does: for the
    automatic restarts of ``server.recovery``."""
    await _boot(ctx, session, inst, restart=False)


async def _boot(ctx: AppContext, session: AsyncSession, inst: Instance, *, restart: bool) -> None:
    """Start (or restart) the machine, configure its guest and wait until it reports the agent
    running. The one path by which every provider's guest gets its config and secrets."""
    provider = provider_for(ctx, inst)
    launch = _launch(ctx, inst)
    operation = provider.restart if restart else provider.start
    handle = await operation(handle_of(inst), launch)
    if handle is not None:  # the provider replaced or readdressed the machine
        inst.provider_ref, inst.provider_state = handle.ref, dict(handle.data)
        await session.commit()
    handle = handle_of(inst)
    endpoint = provider.guest_endpoint(handle)
    try:
        await _configure(provider, handle, launch)
        health = await wait_for_agent(endpoint, launch.secret)
    except guest_client.GuestError as exc:
        # Said without the guest's address: that is the provider's business, not the user's.
        raise ProviderError(str(exc).replace(f" at {endpoint.address}", "")) from exc
    if health.get("state") == "error":
        await provider.stop(handle)
        raise ProviderError(str(health.get("error") or "the agent failed to start"))
    settle(inst)
    await set_status(session, inst, S.RUNNING, "agent running")
    await session.commit()
    from gentity.server import recovery  # it builds on this module

    recovery.watch(ctx, inst.id)


async def _configure(provider: ComputeProvider, handle: MachineHandle, launch: GuestLaunch) -> None:
    """Send the guest its config, with the launch's secrets, over the guest protocol."""
    config = guest_config(launch, provider.guest_layout(handle, launch))
    await guest_client.configure(provider.guest_endpoint(handle), launch.secret, config)


async def configure_if_rebooted(ctx: AppContext, row: Instance) -> bool:
    """Configure a running instance's guest again if it answers unconfigured: its machine
    booted without the control plane (a cloud provider restarted it on its own). Returns
    whether it did; a guest that does not answer is left to the status checks."""
    provider, handle = provider_for(ctx, row), handle_of(row)
    secret = guest_secret(ctx, row)
    try:
        health = await guest_client.health(
            provider.guest_endpoint(handle), secret, timeout=HEALTH_TIMEOUT
        )
        if health.get("configured") is not False:
            return False
        await _configure(provider, handle, _launch(ctx, row))
    except guest_client.GuestError:
        return False
    log.info("instance %s: its guest had restarted unconfigured; configured it again", row.id)
    return True


async def wait_for_agent(endpoint: guest_client.GuestEndpoint, secret: str) -> dict[str, Any]:
    """Until the guest says the agent runs or has failed for good: each ``wait`` answers as
    soon as the guest's state changed, so there is no polling."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + AGENT_READY_TIMEOUT
    health = await guest_client.health(endpoint, secret)
    while health.get("state") not in ("running", "error"):
        left = deadline - loop.time()
        if left <= 0:
            raise ProviderError(f"the agent did not start (guest state: {health.get('state')})")
        health = await guest_client.wait(
            endpoint, secret, since=health.get("version"), timeout=left
        )
    return health


# --- running operations --------------------------------------------------------------------


def provider_for(ctx: AppContext, row: InstanceRow) -> ComputeProvider:
    """The provider that runs ``row``'s machine, the one its row names: every use of a
    provider goes through here. :class:`ProviderUnavailable` when this server cannot act on
    the machine (its provider is not enabled here, or another host runs it)."""
    if row.provider_ref is None:
        return ctx.providers.get(row.provider)
    return ctx.providers.reachable(row.provider, handle_of(row))
