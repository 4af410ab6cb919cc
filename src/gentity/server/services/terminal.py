"""Joining an instance's terminal: who may, when, and the connection to its guest."""

from __future__ import annotations

from typing import Literal

from gentity import models
from gentity.guest import client as guest_client
from gentity.server.context import AppContext
from gentity.server.services import instances
from gentity.server.services.errors import Conflict, NotFound, UpstreamFailed


async def open_session(
    ctx: AppContext,
    user_id: str,
    instance_id: str,
    *,
    scope_instance_id: str | None,
    op: Literal["attach", "shell"],
    cols: int | None,
    rows: int | None,
) -> guest_client.GuestSession:
    """A session with the guest of the caller's running instance: the agent's terminal
    (``attach``) or a fresh shell (``shell``).

    ``scope_instance_id`` is the one instance the caller's credential is limited to, if any.
    Holds no database session once it returns: a terminal may stay open for hours.
    """
    if scope_instance_id not in (None, instance_id):
        raise NotFound()
    async with ctx.db.session() as db:
        row = await instances.get_owned(db, user_id, instance_id)
    if not instances.guest_serves(ctx, row):
        raise Conflict(f"the instance is {row.status}; start it first")
    endpoint = instances.provider_for(ctx, row).guest_endpoint(instances.handle_of(row))
    try:
        return await guest_client.open_session(
            endpoint, instances.guest_secret(ctx, row), op=op, cols=cols, rows=rows
        )
    except guest_client.GuestError as exc:
        agent = await instances.agent_health(ctx, row) if op == "attach" else None
        if agent is not None and agent.state is not models.AgentState.READY:
            raise Conflict(agent_down_message(agent)) from exc
        # The guest's address is the provider's business, not the user's.
        raise UpstreamFailed(str(exc).replace(f" at {endpoint.address}", "")) from exc


def agent_down_message(agent: models.AgentHealth) -> str:
    """Why the agent's session cannot be joined, in words."""
    words = {
        models.AgentState.INSTALLING: "the agent is still being installed",
        models.AgentState.STARTING: "the agent is still starting",
        models.AgentState.CRASHED: "the agent crashed and is not restarted",
        models.AgentState.BACKOFF: "the agent keeps exiting; it is restarted after a delay",
        models.AgentState.EXITED: "the agent has exited and is not restarted",
    }
    message = words.get(agent.state, f"the agent is {agent.state.value}")
    details = []
    if agent.last_exit_code is not None:
        details.append(f"last exit code {agent.last_exit_code}")
    if agent.restarts:
        details.append(f"restarted {agent.restarts} times")
    if details:
        message += f" ({', '.join(details)})"
    return message + "; its log says why, and a shell (?shell=1) still works"
