"""How the CLI talks to people and scripts: rich tables, ``--json``, one-line errors."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Annotated, Any, NoReturn

import typer
from pydantic import BaseModel
from rich.console import Console
from rich.status import Status
from rich.table import Table
from rich.text import Text
from typer.core import MarkupMode

from gentity.client import ApiConnectionError, ApiError, ConfigError

#: Spinners and notes go to stderr, so stdout carries only the data a script asked for.
err_console = Console(stderr=True, highlight=False)
#: Piped into grep or a file, a table should keep one row per line rather than wrap at 80.
console = Console(highlight=False, width=None if sys.stdout.isatty() else 1000)

#: Every ``typer.Typer`` here takes this: Typer's rich help labels each flag with a type
#: (``--json <bool>``), which reads as if the flag took a value; plain help shows flags as flags.
PLAIN_HELP: MarkupMode = None

JsonFlag = Annotated[
    bool, typer.Option("--json", help="Print machine-readable JSON (camelCase, like the API).")
]

STATUS_STYLES = {
    "running": "green",
    "error": "red",
    "stopped": "dim",
    "destroyed": "dim",
}


def dump(value: Any) -> Any:
    """Plain JSON data, camelCase, from wire models (or lists/dicts of them)."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", by_alias=True)
    if isinstance(value, list | tuple):
        return [dump(v) for v in value]
    if isinstance(value, dict):
        return {k: dump(v) for k, v in value.items()}
    return value


def print_json(value: Any, *, indent: int | None = 2) -> None:
    # Not through rich: no wrapping, no colour codes, exactly what json.loads reads back.
    sys.stdout.write(json.dumps(dump(value), indent=indent) + "\n")
    sys.stdout.flush()


Cell = str | Text


def _text(cell: Cell) -> Text:
    # Plain strings are shown as they are: a name like "[red]" is text, not rich markup.
    return cell if isinstance(cell, Text) else Text(cell)


def table(columns: Sequence[str], rows: Iterable[Sequence[Cell]]) -> None:
    t = Table(box=None, pad_edge=False, header_style="bold")
    for column in columns:
        t.add_column(column, overflow="fold")
    for row in rows:
        t.add_row(*(_text(c) for c in row))
    console.print(t)


def fields(pairs: Iterable[tuple[str, Cell]]) -> None:
    """A two-column "label: value" listing, for ``show`` commands."""
    t = Table(box=None, pad_edge=False, show_header=False)
    t.add_column(style="bold")
    t.add_column(overflow="fold")
    for label, value in pairs:
        t.add_row(label, _text(value))
    console.print(t)


def status(value: str) -> Text:
    return Text(value, style=STATUS_STYLES.get(value, ""))


def spinner(message: str) -> Status:
    """A spinner on stderr while a call blocks (nothing is drawn when stderr is not a TTY)."""
    return err_console.status(Text(message))


def when(value: datetime | None) -> str:
    if value is None:
        return "-"
    return value.astimezone().strftime("%Y-%m-%d %H:%M")


def note(message: str) -> None:
    """A remark for the person at the terminal (stderr, never mixed into data)."""
    # soft_wrap: no line breaks of our own, which would split paths and commands in two.
    err_console.print(message, markup=False, highlight=False, soft_wrap=True)


def fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(f"Error: {message}", err=True)
    raise typer.Exit(code)


def describe_error(exc: Exception) -> str:
    """The one line the CLI prints for an SDK error."""
    if isinstance(exc, ApiConnectionError | ConfigError):
        return str(exc)
    if isinstance(exc, ApiError) and exc.status == 401 and exc.message == "Unauthorized":
        # The generic answer for a missing, revoked or expired token.
        return f"{exc} - sign in with: gentity login"
    return str(exc)


def report_and_exit(exc: ApiError | ConfigError) -> NoReturn:
    typer.echo(f"Error: {describe_error(exc)}", err=True)
    sys.exit(1)
