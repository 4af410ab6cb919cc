"""``gentity agents``: the versions this server installs its agents at, and moving them.

Run on the server, like ``gentity users``: the pins live in the data directory
(``agent-versions.json``, over the catalog's own), and the server reads them when it starts.
"""

from __future__ import annotations

from typing import Annotated

import typer

from gentity.catalog import (
    PINS_FILE,
    VERSION,
    Catalog,
    CatalogAgent,
    CatalogError,
    load_catalog,
    read_pins,
    write_pins,
)
from gentity.catalog.registry import RegistryError, has_version, latest_version
from gentity.cli.output import PLAIN_HELP, JsonFlag, fail, note, print_json, table
from gentity.settings import Settings

app = typer.Typer(
    rich_markup_mode=PLAIN_HELP,
    help="The agent versions this server installs (run on the server).",
    no_args_is_help=True,
)


def _installable_ids(incomplete: str) -> list[str]:
    return [a.id for a in load_catalog().agents if a.install and a.id.startswith(incomplete)]


AgentArg = Annotated[
    str | None,
    typer.Argument(
        metavar="[AGENT]",
        help="The agent to move (default: every agent that installs).",
        autocompletion=_installable_ids,
    ),
]


def _current(settings: Settings) -> tuple[Catalog, dict[str, str]]:
    if not settings.data_dir.is_dir():
        fail(
            f"no data directory at {settings.data_dir}; set GENTITY_DATA_DIR as for `gentity serve`"
        )
    note(f"Data directory: {settings.data_dir}")
    try:
        pins = read_pins(settings.data_dir)
        return load_catalog().with_pins(pins), pins
    except CatalogError as exc:
        fail(str(exc))


@app.command("versions")
def versions(as_json: JsonFlag = False) -> None:
    """Show the version each agent installs at, and whether the data directory pins it."""
    catalog, pins = _current(Settings())
    rows = [
        (a.id, a.install.package, a.install.version, "data dir" if a.id in pins else "catalog")
        for a in catalog.agents
        if a.install is not None
    ]
    if as_json:
        keys = ("id", "package", "version", "pinnedBy")
        print_json({"agents": [dict(zip(keys, r, strict=True)) for r in rows]})
        return
    table(["AGENT", "PACKAGE", "VERSION", "PINNED BY"], [list(r) for r in rows])


@app.command("update")
def update(
    agent: AgentArg = None,
    version: Annotated[
        str | None,
        typer.Option(
            "--version", help="The exact version (default: the registry's latest); needs AGENT."
        ),
    ] = None,
) -> None:
    """Move agents to another version: the registry's latest, or the one given.

    The version is checked with the registry first (npm or pip, with their usual settings),
    then written to agent-versions.json in the data directory. The server reads that file when
    it starts: restart it. Each instance installs the new version when it next starts; running
    instances keep theirs until they are restarted.
    """
    if version is not None and agent is None:
        fail("--version needs an AGENT: versions differ between agents")
    if version is not None and not VERSION.fullmatch(version):
        fail(f"{version!r} is not an exact version (e.g. 1.2.3)")
    settings = Settings()
    catalog, pins = _current(settings)
    chosen = _chosen(catalog, agent)
    shipped = {a.id: a for a in load_catalog().agents}
    changed = False
    for entry in chosen:
        step = entry.install
        assert step is not None  # _chosen keeps agents that install
        try:
            if version is None:
                wanted = latest_version(step)
            elif not has_version(step, version):
                fail(f"{step.package} has no version {version} in the registry")
            else:
                wanted = version
        except RegistryError as exc:
            fail(f"{entry.id}: cannot ask the registry: {exc}")
        if wanted == step.version:
            typer.echo(f"{entry.id}: {step.package} stays at {wanted}.")
            continue
        shipped_step = shipped[entry.id].install
        # The catalog's own pin needs no override, so a later catalog moves it again.
        if shipped_step is not None and wanted == shipped_step.version:
            pins.pop(entry.id, None)
        else:
            pins[entry.id] = wanted
        changed = True
        typer.echo(f"{entry.id}: {step.package} {step.version} -> {wanted}.")
    if not changed:
        return
    path = write_pins(settings.data_dir, pins)
    note(
        f"Wrote {path}. Restart the server to use it; each instance installs its new version "
        "when it next starts, and running instances keep theirs until they are restarted."
    )


def _chosen(catalog: Catalog, agent: str | None) -> list[CatalogAgent]:
    installable = [a for a in catalog.agents if a.install is not None]
    if agent is None:
        return installable
    found = next((a for a in installable if a.id == agent), None)
    if found is None:
        names = ", ".join(a.id for a in installable)
        fail(f"no agent {agent!r} installs a package ({PINS_FILE} pins: {names})")
    return [found]
