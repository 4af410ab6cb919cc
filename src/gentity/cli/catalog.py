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
        # One row per model, each with the variable its own key is read from: an agent that
        # talks to several providers needs a different key for each model.
        for index, m in enumerate(agent.models):
            first = index == 0
            rows.append(
                (
                    agent.id if first else "",
                    agent.name if first else "",
                    f"{m.provider}/{m.name}",
                    api_key_env(agent, m) or "-",
                )
            )
    table(["AGENT", "NAME", "MODEL", "API KEY FROM"], rows)
    note("\nCreate one with: gentity compute create --agent AGENT [--model MODEL]")
