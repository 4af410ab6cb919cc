"""Encryption keys form a keyring, and ``gentity secrets rotate`` replaces the key.

Ciphertexts name the key that sealed them (today's ``\\x01`` format stays readable), new
secrets are sealed with the newest key, and a rotation re-encrypts every stored secret before
the old key leaves the key file: with live instances, interrupted half-way, and with the key
file outside the data directory.
"""

from __future__ import annotations

import asyncio
import base64
import os
import secrets
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import ValidationError
from sqlalchemy import LargeBinary, select, update

from gentity.server.db.database import Database
from gentity.server.db.orm import Base, Instance
from gentity.server.security import crypto
from gentity.server.security.crypto import SecretBox, SecretBoxError
from gentity.settings import Settings
from tests.conftest import LiveServer
from tests.fake_agents import create_claude as request_claude
from tests.fake_agents import seed_fake_claude
from tests.server.terminal_client import Terminal, ws_url
from tests.server.test_secrets import FAKE_CLAUDE

KEY = "sk-ant-keyring-canary-3c9e0a7f1d"
T = TypeVar("T")


def b64(key: bytes) -> str:
    return base64.b64encode(key).decode()


def v1_blob(key: bytes, plaintext: str, context: str) -> bytes:
    """A ciphertext in the format of the releases before keyrings: \\x01 + nonce + sealed."""
    nonce = secrets.token_bytes(12)
    return b"\x01" + nonce + AESGCM(key).encrypt(nonce, plaintext.encode(), context.encode())


# --- the keyring ---------------------------------------------------------------------------


def test_old_ciphertexts_stay_readable_and_new_ones_name_their_key(tmp_path: Path) -> None:
    box = SecretBox.from_settings(None, tmp_path)
    (first,) = crypto.read_key_file(tmp_path / "secret.key")
    old = v1_blob(first, "sealed before keyrings", "inst-1")
    assert box.decrypt(old, context="inst-1") == "sealed before keyrings"
    second = crypto.new_key()
    crypto.write_key_file(tmp_path / "secret.key", [second, first])
    ring = SecretBox.from_settings(None, tmp_path)
    assert ring.decrypt(old, context="inst-1") == "sealed before keyrings"
    blob = ring.encrypt("new", context="inst-1")
    assert blob[:1] == b"\x02" and blob[1:9] == crypto.key_id(second)
    assert ring.is_current(blob) and not ring.is_current(old)
    assert first not in blob and second not in blob
    # A ring without the sealing key cannot open it, and says so.
    with pytest.raises(SecretBoxError):
        SecretBox([first]).decrypt(blob, context="inst-1")
    with pytest.raises(SecretBoxError):
        ring.decrypt(blob, context="inst-2")


def test_keys_from_settings_form_a_ring_newest_first(tmp_path: Path) -> None:
    new, old = crypto.new_key(), crypto.new_key()
    old_blob = SecretBox([old]).encrypt("x", context="c")
    box = SecretBox.from_settings(f"{b64(new)}, {b64(old)}", tmp_path)
    assert box.decrypt(old_blob, context="c") == "x"
    assert SecretBox([new]).decrypt(box.encrypt("y", context="c"), context="c") == "y"
    assert not (tmp_path / "secret.key").exists()
    with pytest.raises(SecretBoxError):
        SecretBox.from_settings(f"{b64(new)},short", tmp_path)


def test_a_running_box_follows_the_key_file(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "secret.key"
    server = SecretBox.from_settings(None, tmp_path, path)
    assert crypto.read_key_file(path)
    other = SecretBox.from_key_file(path)
    crypto.write_key_file(path, [crypto.new_key(), *crypto.read_key_file(path)])
    rotated = SecretBox.from_key_file(path)
    blob = rotated.encrypt("sealed with the new key", context="c")
    # The box that read the file earlier opens it (it re-reads the file), and seals with it.
    assert server.decrypt(blob, context="c") == "sealed with the new key"
    assert rotated.is_current(other.encrypt("z", context="c"))


def test_every_binary_column_is_a_listed_encrypted_column() -> None:
    from gentity.server.db.orm import ENCRYPTED_COLUMNS

    binary = {
        f"{table.name}.{column.name}"
        for table in Base.metadata.tables.values()
        for column in table.columns
        if isinstance(column.type, LargeBinary)
    }
    listed = {f"{c.class_.__tablename__}.{c.key}" for c in ENCRYPTED_COLUMNS}
    assert binary == listed
    assert "instances.api_key_ciphertext" in listed
    assert "instances.guest_secret_ciphertext" in listed


def test_the_key_file_cannot_share_a_directory_instances_need(tmp_path: Path) -> None:
    with pytest.raises(ValidationError):
        Settings(data_dir=tmp_path, secret_key_file=Path("/etc/gentity.key"))
    assert Settings(data_dir=tmp_path, secret_key_file=tmp_path / "k" / "key").secret_key_file


# --- rotation on a real server with live instances -----------------------------------------


def run_db(settings: Settings, work: Callable[[Database], Awaitable[T]]) -> T:
    async def go() -> T:
        db = Database(settings.resolved_database_url)
        try:
            return await work(db)
        finally:
            await db.close()

    return asyncio.run(go())


def stored(settings: Settings) -> dict[str, tuple[bytes | None, bytes]]:
    async def read(db: Database) -> dict[str, tuple[bytes | None, bytes]]:
        async with db.session() as session:
            rows = await session.execute(
                select(Instance.id, Instance.api_key_ciphertext, Instance.guest_secret_ciphertext)
            )
            return {r[0]: (r[1], r[2]) for r in rows}

    return run_db(settings, read)


def run_cli(settings: Settings, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {
        **os.environ,
        "GENTITY_DATA_DIR": str(settings.data_dir),
        "GENTITY_DATABASE_URL": settings.database_url or "",
        **env,
    }
    if settings.secret_key_file is not None:
        environ["GENTITY_SECRET_KEY_FILE"] = str(settings.secret_key_file)
    return subprocess.run(
        [sys.executable, "-m", "gentity.cli", *args],
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
    )


def create_claude(client: httpx.Client, settings: Settings) -> str:
    if not any((settings.data_dir / "agents").glob("claude-code*")):
        seed_fake_claude(settings, FAKE_CLAUDE)
    created = request_claude(client, KEY)
    assert created.status_code == 200, created.text
    return str(created.json()["id"])


def assert_agent_has_the_key(client: httpx.Client, token: str, iid: str) -> None:
    """The terminal opens (the guest secret decrypts) and the agent's env holds the key."""

    async def check() -> None:
        term = await Terminal.open(ws_url(str(client.base_url), iid, token))
        try:
            await term.send(f'[ "$ANTHROPIC_API_KEY" = "{KEY}" ] && echo key-ok-$((20+22))\r')
            await term.expect("key-ok-42")
        finally:
            await term.close()

    asyncio.run(check())


def restart(client: httpx.Client, iid: str) -> None:
    for action in ("stop", "start"):
        response = client.post(f"/api/instances/{iid}/action", json={"action": action})
        assert response.status_code == 200, response.text
    assert client.get(f"/api/instances/{iid}").json()["status"] == "running"


def make_pre_keyring(settings: Settings, iid: str, key_file: Path) -> None:
    """Store the instance's secrets in today's ``\\x01`` format, as an older server did."""
    (key,) = crypto.read_key_file(key_file)
    box = SecretBox([key])
    api_key, guest = stored(settings)[iid]
    assert api_key is not None

    async def write(db: Database) -> None:
        async with db.session() as session:
            await session.execute(
                update(Instance)
                .where(Instance.id == iid)
                .values(
                    api_key_ciphertext=v1_blob(key, box.decrypt(api_key, context=iid), iid),
                    guest_secret_ciphertext=v1_blob(key, box.decrypt(guest, context=iid), iid),
                )
            )
            await session.commit()

    run_db(settings, write)


def test_rotate_with_live_instances(
    bearer: httpx.Client, token: str, settings: Settings, server: LiveServer
) -> None:
    key_file = settings.data_dir / "secret.key"
    old_text = key_file.read_text()
    first, second = create_claude(bearer, settings), create_claude(bearer, settings)
    make_pre_keyring(settings, first, key_file)
    gone = bearer.post(
        "/api/instances", json={"agentType": "shell", "modelProvider": "none", "modelName": "bash"}
    )
    assert gone.status_code == 200
    assert bearer.delete(f"/api/instances/{gone.json()['id']}").status_code == 200
    before = stored(settings)

    result = run_cli(settings, "secrets", "rotate")
    assert result.returncode == 0, result.stderr
    assert "Re-encrypted 5 stored secrets" in result.stdout  # 2 + 2, and a destroyed one's
    assert "retired 1 old key" in result.stdout
    new_text = key_file.read_text()
    assert len(new_text.split()) == 1
    assert old_text.strip() not in new_text
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"
    (new_key,) = crypto.read_key_file(key_file)
    after = stored(settings)
    assert after.keys() == before.keys()
    for iid, blobs in after.items():
        for blob in blobs:
            if blob is not None:
                assert blob[1:9] == crypto.key_id(new_key), iid
    assert after[gone.json()["id"]][0] is None  # a destroyed instance's key stays gone

    # The running server (which read the key file before) and its instances carry on.
    for iid in (first, second):
        assert_agent_has_the_key(bearer, token, iid)
        restart(bearer, iid)
        assert_agent_has_the_key(bearer, token, iid)
    # New secrets are sealed with the new key, and a second rotation works as well.
    third = create_claude(bearer, settings)
    assert stored(settings)[third][1][1:9] == crypto.key_id(new_key)
    assert run_cli(settings, "secrets", "rotate").returncode == 0
    restart(bearer, third)
    assert_agent_has_the_key(bearer, token, third)


@pytest.mark.parametrize("fail_at", ["re-encryption", "retirement"])
def test_an_interrupted_rotation_loses_nothing(
    bearer: httpx.Client,
    token: str,
    settings: Settings,
    server: LiveServer,
    monkeypatch: pytest.MonkeyPatch,
    fail_at: str,
) -> None:
    from gentity.server.services import secret_keys

    key_file = settings.data_dir / "secret.key"
    (old_key,) = crypto.read_key_file(key_file)
    iids = [create_claude(bearer, settings) for _ in range(2)]
    before = stored(settings)

    class Interrupted(Exception):
        pass

    if fail_at == "re-encryption":
        real_encrypt = SecretBox.encrypt
        calls = [0]

        def encrypt(self: SecretBox, plaintext: str, *, context: str) -> bytes:
            calls[0] += 1
            if calls[0] == 3:  # half-way through the four secrets
                raise Interrupted
            return real_encrypt(self, plaintext, context=context)

        monkeypatch.setattr(SecretBox, "encrypt", encrypt)
    else:
        real_write = crypto.write_key_file
        writes = [0]

        def write(path: Path, keys: Any) -> None:
            writes[0] += 1
            if writes[0] == 2:  # the write that would retire the old key
                raise Interrupted
            real_write(path, keys)

        monkeypatch.setattr(secret_keys, "write_key_file", write)

    with pytest.raises(Interrupted):
        run_db(settings, lambda db: secret_keys.rotate_key_file(db, key_file))
    monkeypatch.undo()

    # Both keys are in the file, newest first; every secret opens with it.
    ring = crypto.read_key_file(key_file)
    assert len(ring) == 2 and ring[1] == old_key
    after = stored(settings)
    if fail_at == "re-encryption":
        assert after == before  # rolled back whole
    else:
        assert all(blobs[1][1:9] == crypto.key_id(ring[0]) for blobs in after.values())
    box = SecretBox.from_key_file(key_file)
    for iid, (api_key, guest) in after.items():
        assert api_key is not None
        assert box.decrypt(api_key, context=iid) == KEY
        box.decrypt(guest, context=iid)
    for iid in iids:
        restart(bearer, iid)
        assert_agent_has_the_key(bearer, token, iid)

    # Running it again finishes the job.
    result = run_cli(settings, "secrets", "rotate")
    assert result.returncode == 0, result.stderr
    assert "retired 2 old key(s)" in result.stdout
    (final,) = crypto.read_key_file(key_file)
    assert final not in ring
    for iid in iids:
        restart(bearer, iid)
        assert_agent_has_the_key(bearer, token, iid)


def test_a_key_file_outside_the_data_directory(
    settings_factory: Callable[..., Settings],
    server_factory: Callable[[Settings], LiveServer],
    tmp_path: Path,
) -> None:
    key_file = tmp_path / "keys" / "gentity.key"
    settings = settings_factory(secret_key_file=key_file)
    server = server_factory(settings)
    assert key_file.exists() and not (settings.data_dir / "secret.key").exists()
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"
    with httpx.Client(base_url=server.url, timeout=60) as client:
        response = client.post(
            "/api/auth/signup", json={"email": "a@example.com", "password": "correct horse battery"}
        )
        assert response.status_code == 200
        token = client.post("/api/tokens", json={"name": "t"}).json()["token"]
        client.headers["Authorization"] = f"Bearer {token}"
        iid = create_claude(client, settings)
        old = key_file.read_text()
        result = run_cli(settings, "secrets", "rotate")
        assert result.returncode == 0, result.stderr
        assert str(key_file) in result.stdout
        assert old.strip() not in key_file.read_text()
        restart(client, iid)
        assert_agent_has_the_key(client, token, iid)

        # The instance sees neither the key file nor its directory.
        async def look() -> str:
            term = await Terminal.open(ws_url(str(client.base_url), iid, token))
            try:
                await term.send(f"ls -a {key_file.parent} | wc -l; cat {key_file}; echo looked\r")
                return await term.expect("looked\r\n")
            finally:
                await term.close()

        output = asyncio.run(look())
        assert key_file.read_text().strip() not in output
        assert client.delete(f"/api/instances/{iid}").status_code == 200


def test_rotate_with_keys_from_settings(settings_factory: Callable[..., Settings]) -> None:
    old, new = crypto.new_key(), crypto.new_key()
    settings = settings_factory(secret_key=b64(old))
    old_box = SecretBox([old])

    async def seed(db: Database) -> None:
        await db.migrate()
        from gentity.server.services.accounts import create_user

        async with db.session() as session:
            user = await create_user(session, "a@example.com", "correct horse battery", admin=True)
            session.add(
                Instance(
                    id="inst1",
                    user_id=user.id,
                    name="n",
                    subdomain="sh-aaaaaa",
                    agent_type="shell",
                    model_provider="none",
                    model_name="bash",
                    cpus=1,
                    memory_mb=512,
                    volume_gb=1,
                    status="stopped",
                    provider="local",
                    provider_state={},
                    api_key_ciphertext=v1_blob(old, KEY, "inst1"),
                    guest_secret_ciphertext=old_box.encrypt("guest-secret", context="inst1"),
                )
            )
            await session.commit()

    run_db(settings, seed)
    result = run_cli(settings, "secrets", "rotate", GENTITY_SECRET_KEY=f"{b64(new)},{b64(old)}")
    assert result.returncode == 0, result.stderr
    assert "Re-encrypted 2 stored secrets" in result.stdout
    api_key, guest = stored(settings)["inst1"]
    assert api_key is not None
    assert SecretBox([new]).decrypt(api_key, context="inst1") == KEY
    assert SecretBox([new]).decrypt(guest, context="inst1") == "guest-secret"
    assert not (settings.data_dir / "secret.key").exists()
