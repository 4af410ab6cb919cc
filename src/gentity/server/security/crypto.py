"""Encryption at rest for secrets the control plane must hand on later (model API keys).

AES-256-GCM with a random 96-bit nonce per message; the instance id is bound in as associated
data, so a ciphertext copied onto another row does not decrypt.
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_VERSION = b"\x01"
_NONCE_LEN = 12


class SecretBoxError(Exception):
    """A key is malformed or a ciphertext does not decrypt."""


class SecretBox:
    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise SecretBoxError("the encryption key must be 32 bytes")
        self._aead = AESGCM(key)

    @classmethod
    def from_settings(cls, secret_key: str | None, data_dir: Path) -> SecretBox:
        """The key from settings (base64), else the data directory's key file, made if absent."""
        if secret_key:
            try:
                return cls(base64.b64decode(secret_key, validate=True))
            except (binascii.Error, ValueError) as exc:
                raise SecretBoxError("GENTITY_SECRET_KEY must be base64 of 32 bytes") from exc
        return cls(load_or_create_key_file(data_dir / "secret.key"))

    def encrypt(self, plaintext: str, *, context: str) -> bytes:
        nonce = secrets.token_bytes(_NONCE_LEN)
        return _VERSION + nonce + self._aead.encrypt(nonce, plaintext.encode(), context.encode())

    def decrypt(self, blob: bytes, *, context: str) -> str:
        if blob[:1] != _VERSION:
            raise SecretBoxError("unknown ciphertext version")
        nonce, body = blob[1 : 1 + _NONCE_LEN], blob[1 + _NONCE_LEN :]
        try:
            return self._aead.decrypt(nonce, body, context.encode()).decode()
        except Exception as exc:
            raise SecretBoxError("ciphertext does not decrypt with this key") from exc


def load_or_create_key_file(path: Path) -> bytes:
    """Read the key file, or create it with mode 0600 without a window where others can read it."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raw = path.read_bytes().strip()
    else:
        raw = base64.b64encode(secrets.token_bytes(32))
        with os.fdopen(fd, "wb") as fh:
            fh.write(raw + b"\n")
    try:
        key = base64.b64decode(raw, validate=True)
    except binascii.Error as exc:
        raise SecretBoxError(f"{path} does not hold a base64 key") from exc
    if len(key) != 32:
        raise SecretBoxError(f"{path} does not hold a 32-byte key")
    return key
