"""``gentity users``: administer accounts directly on the server's database."""

from __future__ import annotations

import asyncio
import sys
from typing import Annotated

import typer

from gentity.cli.output import PLAIN_HELP
from gentity.cli.server_db import CREATE_FLAG, check_database
from gentity.settings import Settings

app = typer.Typer(
    rich_markup_mode=PLAIN_HELP,
    help="Create and manage accounts (runs on the server's own database).",
)


@app.command("create")
def create(
    email: Annotated[str, typer.Option(help="The new account's email address.")],
    admin: Annotated[
        bool, typer.Option("--admin", help="Make the account an administrator.")
    ] = False,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input.")
    ] = False,
    create_database: Annotated[
        bool,
        typer.Option(
            CREATE_FLAG, help="Start a new database when the data directory has none yet."
        ),
    ] = False,
) -> None:
    """Create an account. The first account on an empty database is always an admin.

    Works on the database of this shell's settings, like gentity serve: set GENTITY_DATA_DIR
    (or GENTITY_DATABASE_URL) as for the server. It says which data directory it uses, and
    refuses when there is no database there unless given --create-database.

    The password is prompted for without echo, or read from stdin with --password-stdin;
    it is never taken from an argument, where it would land in shell history.
    """
    settings = Settings()
    check_database(settings, create=create_database)
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    user_id, is_admin = asyncio.run(_create(settings, email, password, admin))
    role = "admin" if is_admin else "user"
    typer.echo(f"Created {role} {email.strip().lower()} ({user_id})")


async def _create(settings: Settings, email: str, password: str, admin: bool) -> tuple[str, bool]:
    from gentity.server.db.database import Database
    from gentity.server.services.accounts import create_user
    from gentity.server.services.errors import DomainError

    db = Database(settings.resolved_database_url, settings.database_limits)
    try:
        await db.migrate()
        async with db.session() as session:
            try:
                user = await create_user(session, email, password, admin=admin)
            except DomainError as exc:
                typer.echo(f"Error: {exc}", err=True)
                raise typer.Exit(1) from exc
            return user.id, user.is_admin
    finally:
        await db.close()


@app.command("disable")
def disable(
    email: Annotated[str, typer.Option(help="The account's email address.")],
    enable: Annotated[
        bool, typer.Option("--enable", help="Enable the account again instead.")
    ] = False,
) -> None:
    """Disable an account: its tokens and sessions stop working, its open terminals and log
    streams end within seconds. Its instances keep running. --enable undoes it."""
    settings = Settings()
    check_database(settings)
    asyncio.run(_set_disabled(settings, email, disabled=not enable))
    typer.echo(f"{'Enabled' if enable else 'Disabled'} {email.strip().lower()}")


async def _set_disabled(settings: Settings, email: str, *, disabled: bool) -> None:
    from gentity.server.db.database import Database
    from gentity.server.services.accounts import set_disabled
    from gentity.server.services.errors import DomainError

    db = Database(settings.resolved_database_url, settings.database_limits)
    try:
        await db.migrate()
        async with db.session() as session:
            try:
                await set_disabled(session, email, disabled=disabled)
            except DomainError as exc:
                typer.echo(f"Error: {exc}", err=True)
                raise typer.Exit(1) from exc
    finally:
        await db.close()
