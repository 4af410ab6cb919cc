"""``python -m gentity.testing.fakefly``: serve the fake Fly API and its edge."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

import uvicorn

from gentity.testing.fakefly.app import create_app


def _image(value: str) -> tuple[str, list[str]]:
    image, separator, command = value.partition("=")
    if not separator or not image or not command.strip():
        raise argparse.ArgumentTypeError("expected IMAGE=COMMAND")
    return image, shlex.split(command)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m gentity.testing.fakefly", description=__doc__)
    parser.add_argument(
        "--host", default="127.0.0.1", help="address of the API (default: %(default)s)"
    )
    parser.add_argument(
        "--port", type=int, default=4280, help="port of the API (default: %(default)s)"
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
        help="volumes and machine files (default: a new temporary directory)",
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
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level="warning")
    server = uvicorn.Server(config)
    original_startup = server.startup

    async def startup(sockets: object = None) -> None:
        await original_startup(sockets)  # type: ignore[arg-type]
        edge = app.state.edge
        print(
            f"fakefly: API http://{args.host}:{args.port}/v1, edge {args.host}:{edge.port}, "
            f"CA {edge.ca_file}",
            flush=True,
        )

    server.startup = startup  # type: ignore[method-assign]
    server.run()


if __name__ == "__main__":
    main()
