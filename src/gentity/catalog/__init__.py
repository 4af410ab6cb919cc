"""The agent catalog: which agents Gentity can run, their models and how to launch them.

The data is ``agents.json`` beside this module; :func:`load_catalog` validates it once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from gentity import models as wire
from gentity.guest.protocol import ReadyRule

_DATA = Path(__file__).with_name("agents.json")


@dataclass(frozen=True)
class InstallSpec:
    """Where an agent's CLI comes from: an npm package or a PyPI package."""

    npm: str | None = None
    pypi: str | None = None


@dataclass(frozen=True)
class CatalogModel:
    provider: str
    name: str
    label: str
    api_key_env: str | None
    """The environment variable the agent reads this model's key from (None: no key)."""


@dataclass(frozen=True)
class CatalogAgent:
    id: str
    name: str
    description: str
    subdomain_prefix: str
    default_cpus: int
    default_memory_mb: int
    default_volume_gb: int
    models: tuple[CatalogModel, ...]
    install: InstallSpec | None
    command: tuple[str, ...]
    ready: ReadyRule = field(default_factory=ReadyRule)
    """When the agent counts as ready (up and waiting for input); the guest applies it."""

    @property
    def requires_api_key(self) -> bool:
        return any(m.api_key_env for m in self.models)

    def model(self, provider: str, name: str) -> CatalogModel | None:
        return next((m for m in self.models if m.provider == provider and m.name == name), None)

    def launch_command(self, model: CatalogModel) -> list[str]:
        """The agent's argv with ``{model}`` and ``{provider}`` filled in."""
        return [arg.format(model=model.name, provider=model.provider) for arg in self.command]

    def to_wire(self) -> wire.Agent:
        return wire.Agent(
            id=self.id,
            name=self.name,
            description=self.description,
            default_cpus=self.default_cpus,
            default_memory_mb=self.default_memory_mb,
            default_volume_gb=self.default_volume_gb,
            models=[
                wire.AgentModel(provider=m.provider, name=m.name, label=m.label)
                for m in self.models
            ],
            requires_api_key=self.requires_api_key,
        )


@dataclass(frozen=True)
class Catalog:
    agents: tuple[CatalogAgent, ...]

    def get(self, agent_id: str) -> CatalogAgent | None:
        return next((a for a in self.agents if a.id == agent_id), None)

    def to_wire(self) -> wire.AgentCatalog:
        return wire.AgentCatalog(agents=[a.to_wire() for a in self.agents])


@cache
def load_catalog(path: Path = _DATA) -> Catalog:
    raw = json.loads(path.read_text())
    key_envs: dict[str, str | None] = {
        name: spec["apiKeyEnv"] for name, spec in raw["providers"].items()
    }
    agents = []
    for a in raw["agents"]:
        agents.append(
            CatalogAgent(
                id=a["id"],
                name=a["name"],
                description=a["description"],
                subdomain_prefix=a["subdomainPrefix"],
                default_cpus=a["defaultCpus"],
                default_memory_mb=a["defaultMemoryMb"],
                default_volume_gb=a["defaultVolumeGb"],
                models=tuple(
                    CatalogModel(m["provider"], m["name"], m["label"], key_envs[m["provider"]])
                    for m in a["models"]
                ),
                install=InstallSpec(**a["install"]) if a["install"] else None,
                command=tuple(a["command"]),
                ready=_ready_rule(a.get("ready")),
            )
        )
    return Catalog(agents=tuple(agents))


def _ready_rule(raw: dict[str, object] | None) -> ReadyRule:
    if raw is None:
        return ReadyRule()
    quiet, pattern = raw.get("quietMs", 1000), raw.get("pattern")
    assert isinstance(quiet, int) and (pattern is None or isinstance(pattern, str))
    return ReadyRule(quiet_ms=quiet, pattern=pattern)
