"""``gentity secrets``: the keys that encrypt stored secrets (runs on the server's own data)."""

from __future__ import annotations

import asyncio

import typer

from gentity.cli.output import PLAIN_HELP
from gentity.cli.server_db import check_database
from gentity.settings import Settings

app = typer.Typer(
    rich_markup_mode=PLAIN_HELP,
    help="Manage the keys that encrypt stored secrets (runs on the server's own database).",
)


@app.command("rotate")
def rotate() -> None:
    """Generate a new key, re-encrypt every stored secret with it, then retire the old keys.

    Works on the key file (GENTITY_SECRET_KEY_FILE, by default <data dir>/secret.key) and the
    database of this server's settings. Safe to interrupt, and to run again: the old keys
    leave the key file only after every secret has been re-encrypted. With GENTITY_SECRET_KEY
    set, put the new key first in it and restart the servers beforehand: rotate then
    re-encrypts under that first key, and says when the others can go.
    """
    settings = Settings()
    check_database(settings)
    message = asyncio.run(_rotate(settings))
    typer.echo(message)


async def _rotate(settings: Settings) -> str:
    from gentity.server.db.database import Database
    from gentity.server.security.crypto import SecretBox, SecretBoxError
    from gentity.server.services.secret_keys import RotationError, reseal_all, rotate_key_file

    db = Database(settings.resolved_database_url, settings.database_limits)
    try:
        await db.migrate()
        if settings.secret_key:
            box = SecretBox.from_settings(settings.secret_key, settings.data_dir)
            count = await reseal_all(db, box)
            return (
                f"Re-encrypted {count} stored secrets under the first key of "
                "GENTITY_SECRET_KEY; the other keys there can now be removed."
            )
        key_file = settings.resolved_secret_key_file
        done = await rotate_key_file(db, key_file)
        return (
            f"Re-encrypted {done.resealed} stored secrets under a new key; retired "
            f"{done.retired} old key(s) from {key_file}."
        )
    except (RotationError, SecretBoxError) as exc:
        typer.echo(f"Error: {exc}", err=True)
        raise typer.Exit(1) from exc
    finally:
        await db.close()
