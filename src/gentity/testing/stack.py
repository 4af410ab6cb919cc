"""``python -m gentity.testing.stack``: Gentity on the fake Fly and the fake Cloudflare.

The production path (``GENTITY_COMPUTE_PROVIDER=fly``, ``GENTITY_DNS_PROVIDER=cloudflare``) on one
machine: it starts both fakes, then ``gentity serve`` pointed at them, and stops all three when
``gentity serve`` ends or on Ctrl-C. Instances are Fly apps whose machines really run (so, like
the fake, it needs root and bubblewrap), and each gets a record under the base domain
(``gentity.test`` unless ``GENTITY_BASE_DOMAIN`` says otherwise). Every other ``GENTITY_*``
setting (port, data directory, database) is passed through as set.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx

FAKE_TOKEN = "fake-token-for-the-local-stack"  # noqa: S105 (the fakes accept any token)
_FLY_LINE = re.compile(r"fakefly: API (?P<api>\S+)/v1, edge (?P<edge>\S+), ")
_CLOUDFLARE_LINE = re.compile(r"fake Cloudflare API on (?P<api>\S+)")


def _start(
    argv: list[str], pattern: re.Pattern[str]
) -> tuple[subprocess.Popen[str], re.Match[str]]:
    """Start a fake and read its announcement line (its ports are picked at start-up)."""
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    line = process.stdout.readline() if process.stdout is not None else ""
    found = pattern.search(line)
    if found is None:
        process.kill()
        raise SystemExit(f"error: {argv[2]} did not start ({line.strip() or 'no output'})")
    return process, found


def _zone_id(api: str, domain: str) -> str:
    zones = httpx.get(
        f"{api}/zones",
        params={"name": domain},
        headers={"Authorization": f"Bearer {FAKE_TOKEN}"},
        timeout=10,
    ).json()
    return str(zones["result"][0]["id"])


@contextlib.contextmanager
def fakes(state: Path, domain: str) -> Iterator[dict[str, str]]:
    """Both fakes running; the settings that point ``gentity serve`` at them."""
    python = sys.executable
    fly, fly_at = _start(
        [python, "-m", "gentity.testing.fakefly", "--port", "0", "--ca-file", str(state / "ca")],
        _FLY_LINE,
    )
    try:
        cloudflare, cloudflare_at = _start(
            [python, "-m", "gentity.testing.fakecloudflare", "--port", "0", "--zone", domain],
            _CLOUDFLARE_LINE,
        )
        try:
            yield {
                "GENTITY_COMPUTE_PROVIDER": "fly",
                "GENTITY_FLY_API_URL": fly_at["api"],
                "GENTITY_FLY_LOGS_URL": fly_at["api"],
                "GENTITY_FLY_API_TOKEN": FAKE_TOKEN,
                "GENTITY_FLY_EDGE": fly_at["edge"],
                "GENTITY_FLY_CA_FILE": str(state / "ca"),
                "GENTITY_DNS_PROVIDER": "cloudflare",
                "GENTITY_CLOUDFLARE_API_URL": cloudflare_at["api"],
                "GENTITY_CLOUDFLARE_API_TOKEN": FAKE_TOKEN,
                "GENTITY_CLOUDFLARE_ZONE_ID": _zone_id(cloudflare_at["api"], domain),
                "GENTITY_BASE_DOMAIN": domain,
            }
        finally:
            _stop(cloudflare)
    finally:
        _stop(fly)


def _stop(process: subprocess.Popen[str]) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def main() -> int:
    domain = os.environ.get("GENTITY_BASE_DOMAIN", "gentity.test")
    with (
        tempfile.TemporaryDirectory(prefix="gentity-stack-") as state,
        fakes(Path(state), domain) as settings,
    ):
        print(
            f"fakes: Fly API {settings['GENTITY_FLY_API_URL']}, "
            f"Cloudflare API {settings['GENTITY_CLOUDFLARE_API_URL']} "
            f"(zone {domain}, any token)",
            flush=True,
        )
        server = subprocess.Popen(
            [sys.executable, "-m", "gentity.cli", "serve"], env={**os.environ, **settings}
        )
        # Ctrl-C reaches the whole process group; a plain TERM is passed on to the server.
        signal.signal(signal.SIGTERM, lambda *_: server.terminate())
        try:
            return server.wait()
        except KeyboardInterrupt:
            return server.wait()


if __name__ == "__main__":
    sys.exit(main())
