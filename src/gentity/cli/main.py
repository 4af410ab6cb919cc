"""The ``gentity`` entry point: one Typer app with a sub-app per noun."""

from __future__ import annotations

import typer

from gentity.cli import serve, users

app = typer.Typer(
    name="gentity",
    help="Gentity: run AI coding agents as cloud instances.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.command("serve")(serve.serve)
app.add_typer(users.app, name="users")


def main() -> None:
    app()
