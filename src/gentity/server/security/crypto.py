"""Encryption at rest for secrets the control plane must hand on later (model API keys).

AES-256-GCM with a random 96-bit nonce per message; the instance id is bound in as associated
data, so a ciphertext copied onto another row does not decrypt.

The keys form a keyring, newest first: new secrets are sealed with the newest key, and any key
of the ring opens what it sealed. A ciphertext names its key::

    \\x02 + key id (8 bytes) + nonce (12) + ciphertext and tag
    \\x01 + nonce (12) + ciphertext and tag      (before keyrings; tried with every key)

The key id is a hash of the key, so it says which key without saying anything about it.
``gentity secrets rotate`` (:mod:`gentity.server.security.rotation`) adds a key, re-encrypts
every stored secret, then retires the old keys.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import os
import secrets
from collections.abc import Sequence
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_V1 = b"\x01"
_V2 = b"\x02"
_NONCE_LEN = 12
_KEY_ID_LEN = 8
KEY_FILE_NAME = "secret.key"


class SecretBoxError(Exception):
    """A key is malformed or a ciphertext does not decrypt."""


def key_id(key: bytes) -> bytes:
    """The id a ciphertext carries to name its key: a hash, not the key."""
    return hashlib.sha256(b"gentity secret key id\0" + key).digest()[:_KEY_ID_LEN]


def new_key() -> bytes:
    return secrets.token_bytes(32)


class SecretBox:
    """Seals with the newest key of the ring; opens with whichever key sealed.

    Built from a key file, it notices when the file changes (a rotation while this server
    runs): it re-reads it before sealing and when a ciphertext names a key it does not hold.
    """

    def __init__(self, keys: Sequence[bytes], *, key_file: Path | None = None) -> None:
        self._key_file = key_file
        self._file_id: tuple[int, int, int] | None = None
        self._load(keys)

    def _load(self, keys: Sequence[bytes]) -> None:
        if not keys:
            raise SecretBoxError("the keyring holds no key")
        if any(len(k) != 32 for k in keys):
            raise SecretBoxError("the encryption key must be 32 bytes")
        self._newest = (key_id(keys[0]), AESGCM(keys[0]))
        self._ring = {key_id(k): AESGCM(k) for k in reversed(keys)}
        self._order = [self._ring[key_id(k)] for k in keys]

    @classmethod
    def from_settings(
        cls, secret_key: str | None, data_dir: Path, key_file: Path | None = None
    ) -> SecretBox:
        """The keys from settings (base64, comma-separated, newest first), else the key file
        (``key_file``, by default ``<data_dir>/secret.key``), made with one key if absent."""
        if secret_key:
            try:
                keys = [base64.b64decode(k.strip(), validate=True) for k in secret_key.split(",")]
            except (binascii.Error, ValueError) as exc:
                raise SecretBoxError("GENTITY_SECRET_KEY must be base64 of 32 bytes") from exc
            if any(len(k) != 32 for k in keys):
                raise SecretBoxError("GENTITY_SECRET_KEY must be base64 of 32 bytes")
            return cls(keys)
        path = key_file or data_dir / KEY_FILE_NAME
        load_or_create_key_file(path)
        return cls.from_key_file(path)

    @classmethod
    def from_key_file(cls, path: Path) -> SecretBox:
        """The keyring of a key file, following later changes to it."""
        st = os.stat(path)  # before reading: a change in between is seen at the next refresh
        box = cls(read_key_file(path), key_file=path)
        box._file_id = _file_id(st)
        return box

    @property
    def key_file(self) -> Path | None:
        """Where the keys come from; None when they come from settings."""
        return self._key_file

    def refresh(self) -> bool:
        """Re-read the key file if it changed since it was read; True if it did."""
        if self._key_file is None:
            return False
        ident = _file_id(os.stat(self._key_file))
        if ident == self._file_id:
            return False
        self._load(read_key_file(self._key_file))
        self._file_id = ident
        return True

    def is_current(self, blob: bytes) -> bool:
        """Whether ``blob`` is sealed with the newest key (nothing for a rotation to do)."""
        return blob[:1] == _V2 and blob[1 : 1 + _KEY_ID_LEN] == self._newest[0]

    def encrypt(self, plaintext: str, *, context: str) -> bytes:
        # A key file that cannot be read now leaves the keys in memory in use.
        with contextlib.suppress(OSError, SecretBoxError):
            self.refresh()
        kid, aead = self._newest
        nonce = secrets.token_bytes(_NONCE_LEN)
        return _V2 + kid + nonce + aead.encrypt(nonce, plaintext.encode(), context.encode())

    def decrypt(self, blob: bytes, *, context: str) -> str:
        try:
            return self._decrypt(blob, context)
        except SecretBoxError:
            with contextlib.suppress(OSError, SecretBoxError):
                if self.refresh():
                    return self._decrypt(blob, context)
            raise

    def _decrypt(self, blob: bytes, context: str) -> str:
        if blob[:1] == _V2:
            aead = self._ring.get(blob[1 : 1 + _KEY_ID_LEN])
            if aead is None:
                raise SecretBoxError("ciphertext sealed with a key that is not in the keyring")
            candidates = [aead]
            blob = blob[1 + _KEY_ID_LEN :]
        elif blob[:1] == _V1:
            candidates, blob = self._order, blob[1:]
        else:
            raise SecretBoxError("unknown ciphertext version")
        nonce, body = blob[:_NONCE_LEN], blob[_NONCE_LEN:]
        for aead in candidates:
            try:
                return aead.decrypt(nonce, body, context.encode()).decode()
            except (InvalidTag, ValueError):
                continue
        raise SecretBoxError("ciphertext does not decrypt with this key")


def _file_id(st: os.stat_result) -> tuple[int, int, int]:
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def read_key_file(path: Path) -> list[bytes]:
    """The keys of a key file: one base64 key per line, newest first."""
    keys = []
    for number, line in enumerate(path.read_bytes().splitlines(), 1):
        raw = line.strip()
        if not raw:
            continue
        try:
            key = base64.b64decode(raw, validate=True)
        except binascii.Error as exc:
            raise SecretBoxError(f"{path} line {number} does not hold a base64 key") from exc
        if len(key) != 32:
            raise SecretBoxError(f"{path} line {number} does not hold a 32-byte key")
        keys.append(key)
    if not keys:
        raise SecretBoxError(f"{path} holds no key")
    return keys


def write_key_file(path: Path, keys: Sequence[bytes]) -> None:
    """Replace the key file with ``keys`` (newest first), atomically and durably.

    A new file with mode 0600 is written, synced and renamed over the old one, so a crash
    leaves either the old keys or the new ones, never a half-written file.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(b"".join(base64.b64encode(k) + b"\n" for k in keys))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise
    directory = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def load_or_create_key_file(path: Path) -> bytes:
    """The newest key of the key file, which is created with one new key (mode 0600, no
    window where others can read it) if it does not exist."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return read_key_file(path)[0]
    key = new_key()
    with os.fdopen(fd, "wb") as fh:
        fh.write(base64.b64encode(key) + b"\n")
    return key
