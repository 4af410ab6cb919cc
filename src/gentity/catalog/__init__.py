"""The agent catalog: which agents Gentity can run, their models and how to launch them.

The data is ``agents.json`` beside this module; :func:`load_catalog` validates it once.
Every installed agent is pinned to the exact version the catalog names; a server overrides
those pins with ``agent-versions.json`` in its data directory (see :func:`read_pins`, written
by ``gentity agents update``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import Final

from gentity import models as wire
from gentity.guest.config import ReadyRule, parse_ready_rule
from gentity.guest.seeds import SeedFile, parse_seed_file

_DATA = Path(__file__).with_name("agents.json")
#: Where every agent starts, relative to its home (``/home/agent/work``); made on its volume.
WORKDIR: Final = "work"
#: What an environment variable's name may be (the catalog's and a user's ``env``).
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: An exact package version (npm's ``1.2.3-beta.1``, PyPI's ``0.86.2`` or ``1.0.post1``):
#: no ranges, tags, spaces or anything else an installer would read as an option.
VERSION = re.compile(r"[0-9][0-9A-Za-z.+_-]{0,63}")
#: The data directory's override of the catalog's pins: ``{"agent id": "version"}``.
PINS_FILE: Final = "agent-versions.json"


class CatalogError(ValueError):
    """``agents.json`` does not say what the catalog needs; the message says where."""


@dataclass(frozen=True)
class InstallStep:
    """Where an agent's CLI comes from: an npm package or a PyPI package (exactly one), at
    exactly ``version``.

    A provider decides where to install it (the local one: into a shared cache on the host,
    see :mod:`gentity.providers.compute.local.install`; a Fly guest: into the volume), and
    runs :meth:`commands` there.
    """

    npm: str | None = None
    pypi: str | None = None
    version: str = ""

    @property
    def package(self) -> str:
        return self.npm or self.pypi or ""

    @property
    def spec(self) -> str:
        """What the installer is asked for: ``pkg@1.2.3`` (npm) or ``pkg==1.2.3`` (pip)."""
        if self.npm:
            return f"{self.npm}@{self.version}" if self.version else self.npm
        return f"{self.pypi}=={self.version}" if self.version else self.package

    def cache_name(self, agent_id: str) -> str:
        """The install's directory name: one per agent and version, so a new pin installs
        beside the old one instead of being taken for it."""
        return f"{agent_id}-{self.version}" if self.version else agent_id

    def commands(self, target: str, python: str) -> list[list[str]]:
        """Install the package under ``target`` (``target/bin`` then holds its commands),
        with ``python`` making the virtualenv of a PyPI package."""
        if self.npm:
            return [
                [
                    "npm",
                    "install",
                    "--global",
                    "--prefix",
                    target,
                    "--no-fund",
                    "--no-audit",
                    # Progress: one line per registry fetch, and the install scripts' own
                    # output (a native build of node-pty can take a while).
                    "--loglevel=http",
                    "--foreground-scripts",
                    # The agents need their install scripts (native modules, Claude Code's
                    # postinstall). An operator's ignore-scripts must not break them, and
                    # npm 11's allow-scripts policy (which warns now and is meant to refuse
                    # later) would have to list every dependency with a script, which changes
                    # with each version; the version itself is pinned.
                    "--ignore-scripts=false",
                    "--dangerously-allow-all-scripts",
                    self.spec,
                ]
            ]
        if self.pypi:
            return [
                [python, "-m", "venv", "--clear", target],
                [
                    f"{target}/bin/python",
                    "-m",
                    "pip",
                    "install",
                    "--progress-bar=off",
                    "--disable-pip-version-check",
                    "--no-input",
                    self.spec,
                ],
            ]
        raise CatalogError("the catalog names no package to install")


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
    env: dict[str, str] = field(default_factory=dict)
    """Environment the agent always gets (no secrets: e.g. its auto-updater turned off)."""
    seed: tuple[SeedFile, ...] = ()
    """Config files written into the home before the first start, so the agent opens at its
    prompt: signed in with the key from the environment, the working directory trusted, the
    model chosen, no update or release-notes prompts (see :mod:`gentity.guest.seeds`)."""
    git_init: bool = False
    """Make the working directory a git repository on the first start when no ``repo`` was
    given: the coding agents track their edits with git (Aider would ask to create one)."""

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

    def with_pins(self, pins: dict[str, str]) -> Catalog:
        """This catalog with the agents in ``pins`` installed at the versions it names."""
        unknown = sorted(set(pins) - {a.id for a in self.agents if a.install is not None})
        if unknown:
            raise CatalogError(f"{PINS_FILE}: no installed agent {', '.join(unknown)}")
        return Catalog(
            agents=tuple(
                replace(a, install=replace(a.install, version=pins[a.id]))
                if a.install is not None and a.id in pins
                else a
                for a in self.agents
            )
        )

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
                env=_env(a["id"], a.get("env")),
                seed=_seed(a["id"], a.get("seed")),
                git_init=_flag(a["id"], "gitInit", a.get("gitInit", False)),
            )
        )
    return Catalog(agents=tuple(agents))


def read_pins(data_dir: Path) -> dict[str, str]:
    """The pins in ``<data_dir>/agent-versions.json`` (none when it does not exist)."""
    path = data_dir / PINS_FILE
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise CatalogError(f"{path}: {exc}") from None
    if not isinstance(raw, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and VERSION.fullmatch(v) for k, v in raw.items()
    ):
        raise CatalogError(f'{path}: expected {{"agent id": "exact version"}}')
    return dict(raw)


def write_pins(data_dir: Path, pins: dict[str, str]) -> Path:
    """Replace the pin file with ``pins`` in one step (a reader sees the old or the new)."""
    path = data_dir / PINS_FILE
    tmp = path.with_name(f".{PINS_FILE}.tmp")
    tmp.write_text(json.dumps(dict(sorted(pins.items())), indent=2) + "\n")
    tmp.replace(path)
    return path


def _install_step(agent_id: str, raw: object) -> InstallStep | None:
    if raw is None:
        return None
    kinds = [k for k in ("npm", "pypi") if isinstance(raw, dict) and k in raw]
    if (
        not isinstance(raw, dict)
        or len(kinds) != 1
        or set(raw) != {kinds[0], "version"}
        or not isinstance(package := raw[kinds[0]], str)
        or not package
    ):
        raise CatalogError(
            f"{agent_id}: install must be null, {{npm: name, version}} or {{pypi: name, version}}"
        )
    version = raw["version"]
    if not isinstance(version, str) or not VERSION.fullmatch(version):
        raise CatalogError(f"{agent_id}: install.version must be an exact version")
    if kinds[0] == "npm":
        return InstallStep(npm=package, version=version)
    return InstallStep(pypi=package, version=version)


def _ready_rule(agent_id: str, raw: object) -> ReadyRule:
    try:
        return parse_ready_rule(raw)
    except ValueError as exc:
        raise CatalogError(f"{agent_id}: {exc}") from None


def _env(agent_id: str, raw: object) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, dict) or not all(
        isinstance(k, str) and ENV_NAME.fullmatch(k) and isinstance(v, str) for k, v in raw.items()
    ):
        raise CatalogError(f"{agent_id}: env must map variable names to strings")
    return dict(raw)


def _flag(agent_id: str, name: str, raw: object) -> bool:
    if not isinstance(raw, bool):
        raise CatalogError(f"{agent_id}: {name} must be true or false")
    return raw


def _seed(agent_id: str, raw: object) -> tuple[SeedFile, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise CatalogError(f"{agent_id}: seed must be a list of files")
    try:
        files = tuple(parse_seed_file(f) for f in raw)
    except ValueError as exc:
        raise CatalogError(f"{agent_id}: seed: {exc}") from None
    if len({f.path for f in files}) != len(files):
        raise CatalogError(f"{agent_id}: seed: a path is given twice")
    return files
