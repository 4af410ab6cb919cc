"""``gentity compute ports`` and ``gentity compute open``: an instance's preview URLs."""

from __future__ import annotations

import os
import sys
import webbrowser
from typing import Annotated

import typer

from gentity.cli import completion
from gentity.cli.output import JsonFlag, fail, note, print_json, table
from gentity.cli.resolve import find_instance
from gentity.client import Client

InstanceRef = Annotated[
    str,
    typer.Argument(
        metavar="ID",
        help="The instance: its id, a unique start of it, or its name (see: gentity compute ls).",
        autocompletion=completion.instance_refs,
    ),
]


def ports(
    instance_ref: InstanceRef,
    public: Annotated[
        int | None,
        typer.Option(
            "--public", min=1, max=65535, metavar="PORT", help="Open PORT's preview to anyone."
        ),
    ] = None,
    private: Annotated[
        int | None,
        typer.Option(
            "--private",
            min=1,
            max=65535,
            metavar="PORT",
            help="Make PORT's preview the owner's only again (the default).",
        ),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """List the ports something listens on inside a running instance, with their preview
    URLs; --public/--private first change who may open one."""
    with Client() as client:
        instance = find_instance(client, instance_ref)
        for port, made_public in ((public, True), (private, False)):
            if port is not None:
                client.instances.set_port_public(instance.id, port, made_public)
        found = client.instances.ports(instance.id)
    if as_json:
        print_json({"ports": found})
        return
    if not found:
        note(f"nothing listens on a TCP port in {instance.name} ({instance.id})")
        return
    table(
        ("PORT", "URL", "ACCESS"),
        [(str(p.port), p.url or "-", "public" if p.public else "owner") for p in found],
    )


def open_url(
    instance_ref: InstanceRef,
    port: Annotated[
        int | None,
        typer.Argument(
            min=1, max=65535, help="A port the instance listens on; without it, its dashboard page."
        ),
    ] = None,
    browser: Annotated[
        bool, typer.Option("--browser/--no-browser", help="Open the URL in a browser too.")
    ] = True,
) -> None:
    """Print the URL of a port's preview (or of the instance's page), and open it in a
    browser when this terminal has one."""
    with Client() as client:
        instance = find_instance(client, instance_ref)
        if port is None:
            url = f"{client.base_url.rstrip('/')}/dashboard/instances/{instance.id}"
        else:
            listed = {p.port: p for p in client.instances.ports(instance.id)}
            if port not in listed:
                fail(f"nothing listens on port {port} in {instance.name} ({instance.id})")
            if (url := listed[port].url or "") == "":
                fail("this server is reached by an IP address, which has no subdomains")
    typer.echo(url)
    if browser and _has_browser():
        webbrowser.open(url)


def _has_browser() -> bool:
    """A person at a terminal with a display (or a browser named in $BROWSER); never under a
    script or a test, whose output is not a terminal."""
    if not sys.stdout.isatty():
        return False
    if os.environ.get("BROWSER"):
        return True
    if sys.platform.startswith("linux") and not (
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    ):
        return False
    try:
        webbrowser.get()
    except webbrowser.Error:
        return False
    return True
