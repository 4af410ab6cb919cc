"""``gentity serve``: run the control plane."""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Annotated

import typer
import uvicorn

from gentity.cli.server_db import settings_prefix
from gentity.settings import Settings


def serve(
    host: Annotated[str | None, typer.Option(help="Address to bind (GENTITY_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port to bind (GENTITY_PORT).")] = None,
) -> None:
    """Serve the control plane (API, dashboard, terminals) with the configured settings."""
    overrides: dict[str, object] = {}
    if host is not None:
        overrides["host"] = host
    if port is not None:
        overrides["port"] = port
    settings = Settings(**overrides)  # type: ignore[arg-type]
    _configure_logging(settings.log_level)
    # The port first: a server that cannot serve must leave the data directory, the database
    # and the host's shared state (spares, cgroups) exactly as it found them.
    listener = _listen(settings.host, settings.port)

    from gentity.server.app import create_app  # heavy import: only for this command
    from gentity.server.preflight import StartupError, preflight
    from gentity.server.websocket_protocol import WebSocketProtocol

    try:
        asyncio.run(preflight(settings))
    except StartupError as exc:
        typer.echo(f"Error: {exc}", err=True)
        raise typer.Exit(1) from None
    app = create_app(settings)
    port = listener.getsockname()[1]
    url = settings.public_url or f"http://{_display_host(settings.host)}:{port}"
    typer.echo(f"Gentity {_version()} serving on {url}")
    typer.echo(f"Data directory: {settings.data_dir}")
    # Runnable as printed from another shell: it names this server's database explicitly.
    prefix = settings_prefix(settings)
    typer.echo(
        "Sign in: open the URL in a browser, or create the first account with\n"
        f"  {prefix}gentity users create --admin --email you@example.com\n"
        + ("  (with the database password in place of ***)\n" if "***" in prefix else "")
        + f"then run: gentity login {url}"
    )
    config = uvicorn.Config(
        app,
        host=settings.host,  # uvicorn names the address in its log; the socket is ours
        port=port,
        log_level=settings.log_level,
        # Forwarding headers are the app's business (GENTITY_TRUSTED_PROXIES, none by
        # default): uvicorn's own handling would believe any process on 127.0.0.1.
        proxy_headers=False,
        access_log=True,
        log_config=None,
        ws=WebSocketProtocol,  # uvicorn's sans-I/O protocol, tuned for terminals
        # libuv's loop: each of a keystroke's hops (browser, server, guest and back) costs less
        # loop overhead than in asyncio's selector loop, which is written in Python.
        loop="uvloop",
        timeout_graceful_shutdown=5,
    )
    uvicorn.Server(config).run(sockets=[listener])


def _listen(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port``, or exit with a one-line error when it is taken.

    It listens at once, so that connections made while start-up migrates and reconciles wait
    in the backlog instead of being refused.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio turns Nagle's algorithm off only on connections whose socket
    # says TCP, and with it on, a response written in two parts (headers, then body) waits for
    # the client's delayed ACK: about 40 ms for every request on a kept-alive connection.
    listener = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    # As uvicorn does: a restart must not wait for the old connections' TIME_WAIT to pass.
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((host, port))
        listener.listen(2048)
    except OSError as exc:
        listener.close()
        typer.echo(f"Error: cannot listen on {host}:{port}: {exc.strerror or exc}", err=True)
        raise typer.Exit(1) from None
    return listener


def _display_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "::") else host  # noqa: S104


def _version() -> str:
    from gentity import __version__

    return __version__


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # Alembic narrates every migration step at INFO; only problems are worth a line.
    logging.getLogger("alembic").setLevel(max(logging.WARNING, logging.getLevelName(level.upper())))
