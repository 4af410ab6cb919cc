"""``gentity catalog``: the agents a server can run, and their models."""

from __future__ import annotations

from gentity.cli.apikeys import api_key_env
from gentity.cli.output import JsonFlag, note, print_json, table
from gentity.client import Client


def catalog(as_json: JsonFlag = False) -> None:
    """List the agents you can run and their models (the first model is the default)."""
    with Client() as client:
        agents = client.catalog()
    if as_json:
        print_json({"agents": agents})
        return
    rows = []
    for agent in agents:
        models = "\n".join(f"{m.provider}/{m.name}" for m in agent.models)
        envs = sorted({env for m in agent.models if (env := api_key_env(agent, m))})
        rows.append((agent.id, agent.name, models, "\n".join(envs) or "-"))
    table(["AGENT", "NAME", "MODELS", "API KEY FROM"], rows)
    note("\nCreate one with: gentity compute create --agent AGENT [--model MODEL]")
