"""Entry point: ``python -m gentity.guest`` boots from a bootstrap that holds no secret.

The bootstrap comes from ``GENTITY_GUEST_LISTEN`` / ``GENTITY_GUEST_SECRET_SHA256`` /
``GENTITY_GUEST_ECHO_LOG`` when the first is set (a cloud machine), else as a JSON object on
stdin (the local provider, which also hands over descriptors and the hostname). Everything
is imported before stdin is read, so a guest started ahead of need (a warm spare) is ready
to go the moment its bootstrap arrives; that it waits for it is said before the imports, so
the launcher can attach the sandbox's network meanwhile. The agent's config and secrets come
later, in the ``configure`` request (see :mod:`gentity.guest.config`).

Exit codes: 0 after a clean shutdown on SIGTERM/SIGINT, 1 if the guest cannot start, 2 for
an invalid bootstrap.
"""

import os
import sys

if __name__ == "__main__" and "GENTITY_GUEST_LISTEN" not in os.environ:
    # Tells a launcher that the sandbox is set up (this interpreter runs in it) and that the
    # bootstrap is awaited on stdin. Said first: the imports below take most of the guest's
    # start-up, and the launcher's work (the network) goes on meanwhile.
    print('{"waiting": true}', flush=True)

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
import socket  # noqa: E402

from gentity.guest.config import Bootstrap, bootstrap_from_env, parse_bootstrap  # noqa: E402
from gentity.guest.daemon import Guest  # noqa: E402


def main() -> int:
    """Read the bootstrap, then run the daemon until signalled."""
    try:
        bootstrap = bootstrap_from_env(os.environ) or _bootstrap_from_stdin()
    except ValueError as exc:  # ConfigError and JSONDecodeError never quote values
        print(f"gentity-guest: invalid bootstrap: {exc}", file=sys.stderr)
        return 2
    if bootstrap.hostname:
        # Allowed in the instance's own UTS namespace; elsewhere it fails and we carry on.
        with contextlib.suppress(OSError):
            socket.sethostname(bootstrap.hostname)
    return asyncio.run(Guest(bootstrap).run())


def _bootstrap_from_stdin() -> Bootstrap:
    # The launcher was told that it is awaited (at the top of this module).
    return parse_bootstrap(json.loads(sys.stdin.buffer.read()))


if __name__ == "__main__":
    sys.exit(main())
