"""A create's ``env`` and ``repo``: the env reaches the agent's environment, is stored only
encrypted and never shown back; the repository is cloned into the working directory before the
agent starts, and a clone that fails fails the create with git's reason."""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from gentity.settings import Settings
from tests.conftest import POSTGRES_DSN, LiveServer, mint_token, require, signup
from tests.guest.test_prepare import make_repo
from tests.server.terminal_client import Terminal, ws_url

SHELL = {"agentType": "shell", "modelProvider": "none", "modelName": "bash"}
CANARY = "env-canary-5d1f0e8a"


def test_env_reaches_the_agent_and_is_never_shown_or_stored_in_clear(
    bearer: httpx.Client, token: str, settings: Settings, database_url: str
) -> None:
    created = bearer.post("/api/instances", json={**SHELL, "env": {"GREETING": CANARY}})
    assert created.status_code == 200, created.text
    iid = created.json()["id"]

    async def look() -> str:
        term = await Terminal.open(ws_url(str(bearer.base_url), iid, token))
        await term.send("pwd; echo got-$GREETING\r")
        return await term.expect(f"got-{CANARY}")

    output = asyncio.run(look())
    assert "/home/agent/work" in output  # where every agent starts

    logs = bearer.get(f"/api/instances/{iid}/logs", params={"lines": 1000})
    # The value is a secret like the model key: the log shows it redacted.
    assert "got-[redacted]" in logs.text
    answers = [
        created.text,
        logs.text,
        bearer.get("/api/instances").text,
        bearer.get(f"/api/instances/{iid}").text,
    ]
    for text in answers:
        assert CANARY not in text

    # Stored only as ciphertext: not in any file of the data directory (the SQLite database
    # among them, and the instance's volume), nor in the PostgreSQL row.
    for path in settings.data_dir.rglob("*"):
        if path.is_file() and not path.is_symlink():
            assert CANARY.encode() not in path.read_bytes(), path
    if database_url.startswith("postgres"):
        schema = database_url.rsplit("%3D", 1)[1]
        with psycopg.connect(POSTGRES_DSN) as conn:
            rows = conn.execute(f'SELECT * FROM "{schema}".instances').fetchall()
        assert rows and CANARY not in repr(rows)
    assert bearer.delete(f"/api/instances/{iid}").status_code == 200


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"env": {"1ABC": "x"}}, "not an environment variable name"),
        ({"env": {"A-B": "x"}}, "not an environment variable name"),
        ({"env": {"A": "x\x00y"}}, "NUL"),
        ({"env": {"A": 1}}, "env"),
        ({"env": {f"V{i}": "x" for i in range(65)}}, "env"),
        ({"env": {"A": "x" * 40_000}}, "bytes in all"),
        ({"repo": "http://example.com/x.git"}, "repo must be an https:// URL"),
        ({"repo": "ssh://git@example.com/x.git"}, "repo must be an https:// URL"),
        ({"repo": "file:///var/tmp/x.git"}, "repo must be an https:// URL"),
        ({"repo": "https://user:pw@example.com/x.git"}, "must not contain credentials"),
        ({"repo": "https:///x.git"}, "must name a host"),
        ({"repo": "https://example.com/x .git"}, "spaces"),
    ],
)
def test_bad_env_or_repo_is_a_400(
    bearer: httpx.Client, extra: dict[str, object], message: str
) -> None:
    response = bearer.post("/api/instances", json={**SHELL, **extra})
    assert response.status_code == 400, response.text
    assert message in response.json()["error"]
    assert bearer.get("/api/instances").json()["instances"] == []


@pytest.fixture
def file_repo_server(
    server_factory: Callable[[Settings], LiveServer],
    settings_factory: Callable[..., Settings],
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[httpx.Client, Path]]:
    """A server that accepts ``file://`` repositories, a signed-in client, and a directory
    the sandbox can read for the repository: under ``/srv``, since an instance has ``/tmp``
    and ``/var/tmp`` of its own and the host's are out of its sight."""
    require(os.getuid() == 0, "root, to place a repository where the sandbox can read it (/srv)")
    where = Path("/srv") / f"gentity-test-{secrets.token_hex(6)}"
    where.mkdir(mode=0o755)
    # The instance runs as a uid of its own; git clones only from a repository its user owns.
    # One uid in the range makes it known beforehand.
    uid = 3_000_000 + secrets.randbelow(900_000)
    monkeypatch.setenv("GENTITY_LOCAL_UID_RANGE", f"{uid}-{uid}")
    monkeypatch.setenv("GENTITY_LOCAL_WARM_SPARES", "0")
    server = server_factory(settings_factory(allow_file_repos=True))
    try:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            assert signup(client, "admin@example.com").status_code == 200
            client.headers["Authorization"] = f"Bearer {mint_token(client)}"
            yield client, where
    finally:
        shutil.rmtree(where, ignore_errors=True)


def _give_to_the_instance(where: Path) -> None:
    uid_range = os.environ.get("GENTITY_LOCAL_UID_RANGE")
    for path in [where, *where.rglob("*")]:
        if uid_range is not None:
            uid = int(uid_range.partition("-")[0])
            os.chown(path, uid, uid, follow_symlinks=False)
        if not path.is_symlink():
            path.chmod(0o755 if path.is_dir() else 0o644)


@pytest.mark.local_only  # the repository is given to the local sandbox's uid
def test_repo_is_cloned_into_the_workdir_at_create(
    file_repo_server: tuple[httpx.Client, Path], settings: Settings
) -> None:
    client, where = file_repo_server
    bare = make_repo(where)
    _give_to_the_instance(where)
    url = f"file://{bare}"
    created = client.post("/api/instances", json={**SHELL, "repo": url})
    assert created.status_code == 200, created.text
    iid = created.json()["id"]
    volume = settings.data_dir / "instances" / iid / "disk" / "home"
    assert (volume / "work" / "README.md").read_text() == "hello from the repo\n"
    messages = [
        line["message"]
        for line in client.get(f"/api/instances/{iid}/logs", params={"lines": 1000}).json()["logs"]
    ]
    assert f"prepare: cloning {url} into /home/agent/work" in messages
    assert f"prepare: cloned {url}" in messages
    assert messages.index(f"prepare: cloned {url}") < messages.index(
        next(m for m in messages if m.startswith("agent started"))
    )
    assert client.delete(f"/api/instances/{iid}").status_code == 200


def test_a_clone_that_fails_fails_the_create_with_gits_reason(
    file_repo_server: tuple[httpx.Client, Path],
) -> None:
    client, where = file_repo_server
    url = f"file://{where}/missing.git"
    response = client.post("/api/instances", json={**SHELL, "repo": url})
    assert response.status_code == 502
    error = response.json()["error"]
    assert error.startswith(f"cloning {url} failed (git exited with code 128): fatal: ")
    instance = client.get("/api/instances").json()["instances"][0]
    assert instance["status"] == "error"
    assert instance["errorMessage"] == error
