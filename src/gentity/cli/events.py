"""``gentity compute events``: an instance's status history, or a live feed of its changes."""

from __future__ import annotations

from typing import Annotated

import typer

from gentity import models
from gentity.cli import completion
from gentity.cli.output import note, print_json, table
from gentity.cli.resolve import find_instance
from gentity.client import ApiError, Client

InstanceRef = Annotated[
    str,
    typer.Argument(
        metavar="ID",
        help="The instance: its id (also once destroyed), a unique start of it, or its name.",
        autocompletion=completion.instance_refs,
    ),
]


def events(
    instance_ref: InstanceRef,
    limit: Annotated[
        int, typer.Option("-n", "--limit", help="How many events (1-200); with -f, shown first.")
    ] = 50,
    before: Annotated[
        int | None,
        typer.Option("--before", help="Only events older than this event id (for older pages)."),
    ] = None,
    follow: Annotated[
        bool,
        typer.Option(
            "-f", "--follow", help="Keep printing new events until the instance is destroyed."
        ),
    ] = False,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json", help='Print JSON: {"events": [...], "nextBefore": ...}, or one per line.'
        ),
    ] = False,
) -> None:
    """Print an instance's status changes (newest first): when, from, to, why, and who asked."""
    with Client() as client:
        instance_id = _resolve(client, instance_ref)
        if follow:
            _follow(client, instance_id, limit, as_json)
            return
        page = client.instances.events(instance_id, limit=limit, before=before)
        if as_json:
            print_json(page)
            return
        table(("ID", "TIME", "FROM", "TO", "REASON", "BY"), [_row(e) for e in page.events])
        if page.next_before is not None:
            note(f"older events: gentity compute events {instance_ref} --before {page.next_before}")


def _resolve(client: Client, ref: str) -> str:
    """``ref`` as an instance id: an exact id works also for a destroyed instance (its history
    stays readable); otherwise it names a live instance as for every other command."""
    try:
        client.instances.events(ref, limit=1)
        return ref
    except ApiError as exc:
        if exc.status != 404:
            raise
    return find_instance(client, ref).id


def _follow(client: Client, instance_id: str, limit: int, as_json: bool) -> None:
    try:
        for event in client.instances.follow_events(instance_id, limit=limit):
            if as_json:
                print_json(event, indent=None)
            else:
                typer.echo("  ".join(_row(event)))
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    note(f"instance {instance_id} was destroyed")


def _row(event: models.InstanceEvent) -> tuple[str, str, str, str, str, str]:
    return (
        str(event.id),
        event.time.astimezone().strftime("%Y-%m-%d %H:%M:%S"),
        event.from_status.value if event.from_status else "-",
        event.to_status.value,
        event.reason,
        event.actor,
    )
