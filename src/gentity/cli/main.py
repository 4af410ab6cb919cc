"""The ``gentity`` entry point: one Typer app with a sub-app per noun."""

from __future__ import annotations

import typer

from gentity.cli import agents, auth, catalog, compute, secret_keys, serve, tokens, users
from gentity.cli.output import PLAIN_HELP, report_and_exit
from gentity.client import ApiError, ConfigError

app = typer.Typer(
    name="gentity",
    help="Gentity: run AI coding agents as cloud instances.",
    no_args_is_help=True,
    rich_markup_mode=PLAIN_HELP,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.command("serve")(serve.serve)
app.add_typer(users.app, name="users")
app.add_typer(secret_keys.app, name="secrets")
app.command("login")(auth.login)
app.command("logout")(auth.logout)
app.command("whoami")(auth.whoami)
app.command("catalog")(catalog.catalog)
app.add_typer(compute.app, name="compute")
app.add_typer(tokens.app, name="tokens")
app.add_typer(agents.app, name="agents")


def main() -> None:
    try:
        app(prog_name="gentity")
    except (ApiError, ConfigError) as exc:
        # The one place SDK errors become CLI output: one line on stderr, exit 1, no traceback.
        report_and_exit(exc)
