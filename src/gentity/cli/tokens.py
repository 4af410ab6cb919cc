"""``gentity tokens``: the API tokens of your account."""

from __future__ import annotations

from typing import Annotated

import typer

from gentity.cli.output import PLAIN_HELP, JsonFlag, note, print_json, table, when
from gentity.cli.resolve import token_not_found
from gentity.client import Client

app = typer.Typer(
    rich_markup_mode=PLAIN_HELP, help="List, create and revoke API tokens.", no_args_is_help=True
)


@app.command("ls")
def list_tokens(as_json: JsonFlag = False) -> None:
    """List your active tokens (only their public prefix is shown)."""
    with Client() as client:
        tokens = client.tokens.list()
    if as_json:
        print_json({"tokens": tokens})
        return
    table(
        ["ID", "NAME", "PREFIX", "CREATED", "LAST USED", "EXPIRES"],
        (
            (t.id, t.name, t.prefix, when(t.created_at), when(t.last_used_at), when(t.expires_at))
            for t in tokens
        ),
    )


@app.command("create")
def create(
    name: Annotated[
        str, typer.Argument(metavar="NAME", help="A label, e.g. the machine or job using it.")
    ],
    as_json: JsonFlag = False,
) -> None:
    """Mint a token and print it. It is shown this once: the server keeps only its hash.

    The token alone goes to stdout, so TOKEN=$(gentity tokens create ci) captures it.
    """
    with Client() as client:
        created = client.tokens.create(name)
    if as_json:
        print_json(created)
        return
    typer.echo(created.token)
    note(
        f"Token {created.record.name!r} ({created.record.id}): copy it now, it is not shown again."
    )


@app.command("revoke")
def revoke(
    token_id: Annotated[
        str, typer.Argument(metavar="ID", help="The token id (see: gentity tokens ls).")
    ],
    as_json: JsonFlag = False,
) -> None:
    """Revoke a token; it stops working at once."""
    with Client() as client, token_not_found(token_id):
        client.tokens.revoke(token_id)
    if as_json:
        print_json({"ok": True})
    else:
        typer.echo(f"Revoked {token_id}.")
