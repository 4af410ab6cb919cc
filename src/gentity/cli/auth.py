"""``gentity login``, ``logout`` and ``whoami``: the credentials the other commands use."""

from __future__ import annotations

import os
import socket
import sys
from typing import Annotated

import typer

from gentity.cli.output import JsonFlag, describe_error, fail, note, print_json
from gentity.client import ApiError, Client, ConfigError
from gentity.client.config import (
    TOKEN_ENV,
    SavedConfig,
    load_config,
    resolve_base_url,
    save_config,
)

#: Revoking the replaced token is a courtesy: a server that is gone must not stall the login.
REVOKE_TIMEOUT = 10.0


def login(
    url: Annotated[
        str | None,
        typer.Argument(
            metavar="URL",
            help="The control plane, e.g. https://gentity.example.com "
            "(default: GENTITY_API_URL, the saved URL, then http://127.0.0.1:8080).",
            show_default=False,
        ),
    ] = None,
    email: Annotated[
        str | None, typer.Option(help="Account email (prompted for when missing).")
    ] = None,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input.")
    ] = False,
    token: Annotated[
        bool,
        typer.Option(
            "--token",
            help=f"Save an existing API token instead of signing in: {TOKEN_ENV} if set, "
            "else one line of standard input, else a prompt without echo.",
        ),
    ] = False,
) -> None:
    """Sign in and save an API token for this machine.

    Signs in with email and password, mints a token named cli@<hostname>, signs the browser-style
    session out again and saves the URL and token in ~/.config/gentity/config.json (mode 0600).
    The token saved before, if any, is then revoked.
    Passwords and tokens are never taken from the command line, where they would land in shell
    history and the process list.
    """
    base_url = resolve_base_url(url)
    previous = _saved_or_nothing()
    if token:
        secret = _read_token()
        with Client(base_url, secret) as client:
            user = client.me()
    else:
        email = email or typer.prompt("Email")
        password = _read_password(password_stdin)
        with Client(base_url) as client:
            user = client.login(email, password)
            try:
                secret = client.tokens.create(_token_name()).token
            finally:
                # The token is what we keep; the session would only linger on the server.
                client.logout()
    path = save_config(SavedConfig(url=base_url, token=secret))
    typer.echo(f"Logged in to {base_url} as {user.email}.")
    note(f"Token saved in {path}.")
    if previous.token and previous.token != secret:
        _revoke_replaced(previous.url or base_url, previous.token)


def _saved_or_nothing() -> SavedConfig:
    # An unreadable config file is about to be overwritten anyway: nothing to revoke there.
    try:
        return load_config()
    except ConfigError:
        return SavedConfig()


def _revoke_replaced(url: str, secret: str) -> None:
    """Revoke the token a new login replaced, with its own credentials (it may belong to
    another account or server). The new login stands whatever happens here."""
    try:
        with Client(url, secret, timeout=REVOKE_TIMEOUT) as client:
            _revoke(client, secret)
    except ApiError as exc:
        if exc.status == 401:  # already revoked or expired: nothing left to undo
            return
        note(
            f"Warning: could not revoke the previous token on {url} ({describe_error(exc)}); "
            "revoke it there with: gentity tokens revoke ID"
        )
    except ConfigError as exc:
        note(f"Warning: could not revoke the previous token ({exc})")


def logout(
    local: Annotated[
        bool,
        typer.Option("--local", help="Only forget the saved token; do not revoke it."),
    ] = False,
) -> None:
    """Revoke the saved API token on the server and forget it."""
    config = load_config()
    if not config.token:
        typer.echo("Not logged in.")
        return
    if not local:
        with Client(config.url, config.token) as client:
            try:
                _revoke(client, config.token)
            except ApiError as exc:
                if exc.status != 401:  # 401: already revoked or expired, nothing to undo
                    raise
    save_config(SavedConfig(url=config.url, token=None))
    what = "forgot the token" if local else "token revoked"
    typer.echo(f"Logged out of {config.url or 'the server'} ({what}).")


def whoami(as_json: JsonFlag = False) -> None:
    """Show the account the saved token (or GENTITY_TOKEN) belongs to."""
    with Client() as client:
        user = client.me()
        url = client.base_url
    if as_json:
        print_json(user)
        return
    role = " (admin)" if user.is_admin else ""
    typer.echo(f"{user.email}{role} on {url}")


def _revoke(client: Client, secret: str) -> None:
    # The server lists tokens by their public prefix only; that is how we find our own id.
    for record in client.tokens.list():
        if secret.startswith(record.prefix):
            client.tokens.revoke(record.id)
            return


def _token_name() -> str:
    return f"cli@{socket.gethostname() or 'unknown'}"[:100]


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    return str(typer.prompt("Password", hide_input=True))


def _read_token() -> str:
    secret = os.environ.get(TOKEN_ENV)
    if not secret:
        if sys.stdin.isatty():
            secret = str(typer.prompt("API token", hide_input=True))
        else:
            secret = sys.stdin.readline()
    secret = secret.strip()
    if not secret:
        fail(f"no token given: set {TOKEN_ENV}, or type it when asked")
    return secret
