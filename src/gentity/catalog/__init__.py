"""The agent catalog: which agents Gentity can run, their models and how to launch them.

The data is ``agents.json`` beside this module; :func:`load_catalog` validates it once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from gentity import models as wire
from gentity.guest.config import ReadyRule, parse_ready_rule

_DATA = Path(__file__).with_name("agents.json")


class CatalogError(ValueError):
    """``agents.json`` does not say what the catalog needs; the message says where."""


@dataclass(frozen=True)
class InstallStep:
    """Where an agent's CLI comes from: an npm package or a PyPI package (exactly one).

    A provider decides how and where to install it (the local one: into a shared cache on
    the host, see :mod:`gentity.providers.compute.local.install`).
    """

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
    install: InstallStep | None
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
                install=_install_step(a["id"], a["install"]),
                command=tuple(a["command"]),
                ready=_ready_rule(a["id"], a.get("ready")),
            )
        )
    return Catalog(agents=tuple(agents))


def _install_step(agent_id: str, raw: object) -> InstallStep | None:
    if raw is None:
        return None
    if (
        not isinstance(raw, dict)
        or len(raw) != 1
        or not isinstance(package := raw.get("npm", raw.get("pypi")), str)
        or not package
    ):
        raise CatalogError(f"{agent_id}: install must be null, {{npm: name}} or {{pypi: name}}")
    return InstallStep(npm=package) if "npm" in raw else InstallStep(pypi=package)


def _ready_rule(agent_id: str, raw: object) -> ReadyRule:
    try:
        return parse_ready_rule(raw)
    except ValueError as exc:
        raise CatalogError(f"{agent_id}: {exc}") from None
