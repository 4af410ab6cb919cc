"""Which database the on-server commands (``users``, ``secrets``) work on, and saying so.

They read the same settings as ``gentity serve``, but from the shell they run in: without the
server's ``GENTITY_DATA_DIR`` they would quietly open (and migrate into being) an empty
database in the default data directory, and the account made there would never sign in.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from sqlalchemy.engine import make_url

from gentity.cli.output import fail, note
from gentity.settings import Settings

CREATE_FLAG = "--create-database"


def sqlite_file(settings: Settings) -> Path | None:
    """The SQLite file the settings point at; None for a server database (PostgreSQL)."""
    url = make_url(settings.resolved_database_url)
    if not url.drivername.startswith("sqlite") or not url.database:
        return None
    return Path(url.database)


def check_database(settings: Settings, *, create: bool = False) -> None:
    """Say which database is used; refuse a SQLite file that does not exist unless ``create``."""
    path = sqlite_file(settings)
    if path is None:
        note(f"Database: {_hidden_password(settings)} (GENTITY_DATABASE_URL)")
        return
    note(f"Data directory: {settings.data_dir}")
    if path.exists():
        return
    if not create:
        fail(
            f"no database at {path}; set GENTITY_DATA_DIR (or GENTITY_DATABASE_URL) as for "
            f"`gentity serve`, or pass {CREATE_FLAG} to start a new one there"
        )
    note(f"Creating a new database at {path}.")


def settings_prefix(settings: Settings) -> str:
    """What to put before a command so it uses the same database as these settings:
    ``GENTITY_DATA_DIR=/srv/gentity `` (or the database URL, its password hidden)."""
    if sqlite_file(settings) is None:
        return f"GENTITY_DATABASE_URL={shlex.quote(_hidden_password(settings))} "
    if settings.database_url:
        return f"GENTITY_DATABASE_URL={shlex.quote(settings.database_url)} "
    return f"GENTITY_DATA_DIR={shlex.quote(str(settings.data_dir))} "


def _hidden_password(settings: Settings) -> str:
    return make_url(settings.database_url or "").render_as_string(hide_password=True)
