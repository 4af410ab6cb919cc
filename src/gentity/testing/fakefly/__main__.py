"""``python -m gentity.testing.fakefly``: serve the fake Fly API and its edge."""

from __future__ import annotations

import argparse
import contextlib
import shlex
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import uvicorn
from fastapi import FastAPI

from gentity.testing.fakefly.app import create_app


def _image(value: str) -> tuple[str, list[str]]:
    image, separator, command = value.partition("=")
    if not separator or not image or not command.strip():
        raise argparse.ArgumentTypeError("expected IMAGE=COMMAND")
    return image, shlex.split(command)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m gentity.testing.fakefly",
        description="Serve a fake of the Fly Machines and logs APIs, with a TLS edge.",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address of the API (default: %(default)s)"
    )
    parser.add_argument(
        "--port",
        type=int,
        default=4280,
        help="port of the API, 0 for an ephemeral one (default: %(default)s)",
    )
    parser.add_argument(
        "--edge-port",
        type=int,
        default=0,
        help="TLS port standing in for <app>.fly.dev:443 (default: ephemeral)",
    )
    parser.add_argument("--ca-file", type=Path, help="where to write the edge's CA certificate")
    parser.add_argument(
        "--state-dir",
        type=Path,
        help="volumes and machine files (default: a new temporary directory, removed at shutdown)",
    )
    parser.add_argument("--region", default="iad", help="region of machines created without one")
    parser.add_argument(
        "--image",
        type=_image,
        action="append",
        default=[],
        metavar="IMAGE=COMMAND",
        help="command to run for IMAGE when a machine's config has no init command (repeatable)",
    )
    parser.add_argument(
        "--no-rate-limits", action="store_true", help="answer every request, never 429"
    )
    args = parser.parse_args(argv)
    app = create_app(
        args.state_dir,
        ca_file=args.ca_file,
        edge_host=args.host,
        edge_port=args.edge_port,
        images=dict(args.image),
        default_region=args.region,
        rate_limits=not args.no_rate_limits,
    )
    # Bound before start-up so that the announcement can name the port, even an ephemeral one.
    listener = socket.create_server((args.host, args.port))
    port = listener.getsockname()[1]
    serve = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def announced(running: FastAPI) -> AsyncIterator[None]:
        async with serve(running):
            edge = running.state.edge
            print(
                f"fakefly: API http://{args.host}:{port}/v1, edge {args.host}:{edge.port}, "
                f"CA {edge.ca_file}",
                flush=True,
            )
            yield

    app.router.lifespan_context = announced
    uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[listener])


if __name__ == "__main__":
    main()
