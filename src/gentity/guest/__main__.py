"""Entry point: ``python -m gentity.guest`` reads its JSON config from stdin.

Everything is imported before stdin is read, so a guest started ahead of need (a warm spare)
is ready to go the moment its config arrives.

The config arrives on stdin (never argv, env or a file) because it carries the
guest secret and the agent's API keys. Exit codes: 0 after a clean shutdown on
SIGTERM/SIGINT, 1 if the guest cannot start, 2 for an invalid config.
"""

import sys

# Keep the idle daemon small (target <= 20 MB RSS). asyncio imports ssl and
# hmac imports _hashlib; both map OpenSSL (~9 MB RSS together) though the daemon
# needs neither TLS nor OpenSSL hashes. Blocking them makes asyncio run without
# TLS support and makes hmac.compare_digest the constant-time builtin from
# _operator. This affects only the daemon process, never importers of the package.
for _name in ("ssl", "_ssl", "_hashlib"):
    if _name not in sys.modules:
        sys.modules[_name] = None  # type: ignore[assignment]

# These imports must follow the block above.
import asyncio  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import socket  # noqa: E402

from gentity.guest.daemon import Guest  # noqa: E402
from gentity.guest.protocol import parse_config  # noqa: E402


def main() -> int:
    """Read the JSON config from stdin, then run the daemon until signalled."""
    # Tells a launcher that the sandbox is set up and everything is imported.
    print('{"waiting": true}', flush=True)
    try:
        config = parse_config(json.loads(sys.stdin.buffer.read()))
    except ValueError as exc:  # ConfigError and JSONDecodeError never quote values
        print(f"gentity-guest: invalid config: {exc}", file=sys.stderr)
        return 2
    if config.hostname:
        # Allowed in the instance's own UTS namespace; elsewhere it fails and we carry on.
        with contextlib.suppress(OSError):
            socket.sethostname(config.hostname)
    try:
        os.makedirs(config.workdir, exist_ok=True)
        guest = Guest(config)
    except OSError as exc:
        print(f"gentity-guest: {exc}", file=sys.stderr)
        return 1
    return asyncio.run(guest.run())


if __name__ == "__main__":
    sys.exit(main())
