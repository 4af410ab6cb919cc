"""Which environment variable holds the model API key an agent needs, and reading it."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from functools import cache

import typer

from gentity.catalog import load_catalog
from gentity.cli.output import fail
from gentity.models import Agent, AgentModel


@cache
def _known_envs() -> dict[str, str | None]:
    # The variable names live in the catalog data that ships with this package (the same file
    # the server reads), so the CLI and the agents agree on them.
    return {m.provider: m.api_key_env for a in load_catalog().agents for m in a.models}


def api_key_env(agent: Agent, model: AgentModel) -> str | None:
    """The variable to read the key for ``model`` from; None when the agent needs no key.

    A provider this CLI's catalog does not know (a newer server) gets the usual
    ``<PROVIDER>_API_KEY``.
    """
    if not agent.requires_api_key:
        return None
    known = _known_envs()
    if model.provider in known:
        return known[model.provider]
    return f"{model.provider.upper().replace('-', '_')}_API_KEY"


def read_api_key(
    agent: Agent, model: AgentModel, environ: Mapping[str, str] | None = None
) -> str | None:
    """The key from the environment, else prompted for without echo (or one line of stdin
    when it is not a terminal). None when the agent needs none."""
    env = api_key_env(agent, model)
    if env is None:
        return None
    environ = os.environ if environ is None else environ
    key = environ.get(env, "").strip()
    if key:
        return key
    if sys.stdin.isatty():
        key = str(
            typer.prompt(f"{env} (input hidden)", hide_input=True, default="", show_default=False)
        )
    else:
        key = sys.stdin.readline()
    key = key.strip()
    if not key:
        fail(f"{agent.id} with a {model.provider} model needs an API key: set {env}")
    return key
