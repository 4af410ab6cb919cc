import base64
import stat
from pathlib import Path

import pytest

from gentity.server.security.crypto import SecretBox, SecretBoxError


def test_key_file_is_created_once_with_mode_0600(tmp_path: Path) -> None:
    box = SecretBox.from_settings(None, tmp_path)
    key_file = tmp_path / "secret.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    blob = box.encrypt("sk-canary", context="inst-1")
    # A second start reads the same key back.
    again = SecretBox.from_settings(None, tmp_path)
    assert again.decrypt(blob, context="inst-1") == "sk-canary"


def test_ciphertext_hides_plaintext_and_is_bound_to_its_row(tmp_path: Path) -> None:
    box = SecretBox.from_settings(None, tmp_path)
    a = box.encrypt("sk-canary-value", context="inst-1")
    b = box.encrypt("sk-canary-value", context="inst-1")
    assert a != b  # fresh nonce each time
    assert b"sk-canary" not in a
    with pytest.raises(SecretBoxError):
        box.decrypt(a, context="inst-2")


def test_key_from_settings(tmp_path: Path) -> None:
    key = base64.b64encode(b"k" * 32).decode()
    box = SecretBox.from_settings(key, tmp_path)
    assert not (tmp_path / "secret.key").exists()
    assert box.decrypt(box.encrypt("x", context="c"), context="c") == "x"
    with pytest.raises(SecretBoxError):
        SecretBox.from_settings("not base64!", tmp_path)
    with pytest.raises(SecretBoxError):
        SecretBox.from_settings(base64.b64encode(b"short").decode(), tmp_path)
