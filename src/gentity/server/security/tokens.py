"""The ``gn_live_`` API token format.

A token is ``gn_live_`` + 22 base62 characters of randomness (131 bits) + 6 base62 characters
of CRC32 checksum over the random part. The checksum lets a secret scanner, or this server,
reject a look-alike without a database lookup. Only the sha256 of the whole token is stored.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import zlib

TOKEN_PREFIX = "gn_live_"  # noqa: S105 (a public prefix, not a secret)
_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_RANDOM_LEN = 22
_CHECKSUM_LEN = 6
_TOKEN_RE = re.compile(rf"^{TOKEN_PREFIX}[0-9A-Za-z]{{{_RANDOM_LEN + _CHECKSUM_LEN}}}$")
DISPLAY_PREFIX_LEN = len(TOKEN_PREFIX) + 8


def _base62(number: int, width: int) -> str:
    digits = []
    for _ in range(width):
        number, rem = divmod(number, 62)
        digits.append(_BASE62[rem])
    return "".join(reversed(digits))


def _checksum(body: str) -> str:
    return _base62(zlib.crc32(body.encode()), _CHECKSUM_LEN)


def generate_token() -> str:
    body = "".join(secrets.choice(_BASE62) for _ in range(_RANDOM_LEN))
    return TOKEN_PREFIX + body + _checksum(body)


def is_well_formed(token: str) -> bool:
    """Shape and checksum only: no database involved."""
    if not _TOKEN_RE.match(token):
        return False
    body = token[len(TOKEN_PREFIX) : len(TOKEN_PREFIX) + _RANDOM_LEN]
    return secrets.compare_digest(_checksum(body), token[-_CHECKSUM_LEN:])


def token_hash(secret: str) -> str:
    """sha256 hex: tokens and session secrets are high-entropy, so no salt or KDF is needed."""
    return hashlib.sha256(secret.encode()).hexdigest()


def display_prefix(token: str) -> str:
    """``gn_live_`` + 8 characters: enough to recognise a token, useless to an attacker."""
    return token[:DISPLAY_PREFIX_LEN]
