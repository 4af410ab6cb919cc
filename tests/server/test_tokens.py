"""API tokens: the contract's shapes, the token format, revocation and identical 401s."""

import asyncio
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psycopg
from sqlalchemy import event, update

from gentity.server.db.orm import ApiToken
from gentity.server.security.tokens import generate_token, is_well_formed
from gentity.settings import Settings
from tests.conftest import POSTGRES_DSN, LiveServer, mint_token

TOKEN_RE = re.compile(r"^gn_live_[0-9A-Za-z]{28}$")


def test_mint_returns_plaintext_once_with_no_store(admin: httpx.Client) -> None:
    response = admin.post("/api/tokens", json={"name": "laptop"})
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert TOKEN_RE.match(body["token"])
    record = body["record"]
    assert record["name"] == "laptop"
    assert record["prefix"] == body["token"][:16]
    assert record["prefix"].startswith("gn_live_")
    assert {"id", "name", "prefix", "createdAt", "lastUsedAt", "expiresAt"} == set(record)
    listed = admin.get("/api/tokens").json()["tokens"]
    assert listed == [record]
    assert body["token"] not in admin.get("/api/tokens").text


def test_token_format_has_entropy_and_checksum() -> None:
    tokens = {generate_token() for _ in range(200)}
    assert len(tokens) == 200
    for token in tokens:
        assert is_well_formed(token)
        # Any single-character change breaks the checksum (or the shape).
        flipped = token[:-1] + ("A" if token[-1] != "A" else "B")
        assert not is_well_formed(flipped)
        body = token[8:30]
        changed = token[:8] + ("x" if body[0] != "x" else "y") + token[9:]
        assert not is_well_formed(changed)


def test_bearer_token_lists_and_mints(bearer: httpx.Client) -> None:
    assert len(bearer.get("/api/tokens").json()["tokens"]) == 1
    second = bearer.post("/api/tokens", json={"name": "ci"})
    assert second.status_code == 200
    assert len(bearer.get("/api/tokens").json()["tokens"]) == 2


def test_revoked_token_fails_on_its_very_next_call(bearer: httpx.Client) -> None:
    token_id = bearer.get("/api/tokens").json()["tokens"][0]["id"]
    assert bearer.delete(f"/api/tokens/{token_id}").json() == {"ok": True}
    after = bearer.get("/api/tokens")
    assert after.status_code == 401
    assert after.json() == {"error": "Unauthorized"}


def test_revoke_is_a_soft_delete(admin: httpx.Client, settings: Settings) -> None:
    token_id = admin.post("/api/tokens", json={"name": "gone"}).json()["record"]["id"]
    assert admin.delete(f"/api/tokens/{token_id}").status_code == 200
    assert admin.get("/api/tokens").json() == {"tokens": []}
    assert admin.delete(f"/api/tokens/{token_id}").status_code == 404

    async def revoked_at() -> datetime | None:
        from gentity.server.db.database import Database

        db = Database(settings.resolved_database_url)
        async with db.session() as s:
            row = await s.get(ApiToken, token_id)
            assert row is not None
            value = row.revoked_at
        await db.close()
        return value

    assert asyncio.run(revoked_at()) is not None


def test_every_auth_failure_looks_the_same(
    server: LiveServer, admin: httpx.Client, settings: Settings
) -> None:
    revoked = mint_token(admin, "revoked")
    revoked_id = admin.get("/api/tokens").json()["tokens"][0]["id"]
    admin.delete(f"/api/tokens/{revoked_id}")
    expired = mint_token(admin, "expired")
    _expire(settings, expired)
    valid = generate_token()
    candidates = {
        "missing": {},
        "empty": {"Authorization": "Bearer"},
        "basic": {"Authorization": "Basic YWRtaW46cGFzcw=="},
        "malformed": {"Authorization": "Bearer not-a-token"},
        "bad checksum": {"Authorization": f"Bearer {valid[:-1]}{'A' if valid[-1] != 'A' else 'B'}"},
        "unknown": {"Authorization": f"Bearer {valid}"},
        "revoked": {"Authorization": f"Bearer {revoked}"},
        "expired": {"Authorization": f"Bearer {expired}"},
    }
    with httpx.Client(base_url=server.url) as anonymous:
        for why, headers in candidates.items():
            response = anonymous.get("/api/tokens", headers=headers)
            assert response.status_code == 401, why
            assert response.content == b'{"error":"Unauthorized"}', why


def _expire(settings: Settings, plaintext: str) -> None:
    from gentity.server.db.database import Database
    from gentity.server.security.tokens import token_hash

    async def run() -> None:
        db = Database(settings.resolved_database_url)
        async with db.session() as s:
            await s.execute(
                update(ApiToken)
                .where(ApiToken.token_hash == token_hash(plaintext))
                .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
            )
            await s.commit()
        await db.close()

    asyncio.run(run())


def test_malformed_token_never_reaches_the_database(server: LiveServer) -> None:
    statements: list[str] = []
    engine = server.app.state.ctx.db.engine.sync_engine

    def record(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        with httpx.Client(base_url=server.url) as c:
            token = generate_token()
            bad = token[:-1] + ("A" if token[-1] != "A" else "B")
            for value in ("garbage", "gn_live_short", bad):
                r = c.get("/api/tokens", headers={"Authorization": f"Bearer {value}"})
                assert r.status_code == 401
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert [s for s in statements if "api_tokens" in s] == []


def test_bearer_wins_over_cookie(admin: httpx.Client) -> None:
    assert admin.get("/api/tokens").status_code == 200
    response = admin.get("/api/tokens", headers={"Authorization": f"Bearer {generate_token()}"})
    assert response.status_code == 401


def test_last_used_is_recorded_but_not_on_every_request(bearer: httpx.Client) -> None:
    bearer.get("/api/tokens")
    first = bearer.get("/api/tokens").json()["tokens"][0]["lastUsedAt"]
    assert first is not None
    for _ in range(3):
        bearer.get("/api/tokens")
    assert bearer.get("/api/tokens").json()["tokens"][0]["lastUsedAt"] == first


def test_optional_expiry(admin: httpx.Client) -> None:
    later = (datetime.now(UTC) + timedelta(days=30)).isoformat()
    created = admin.post("/api/tokens", json={"name": "temp", "expiresAt": later})
    assert created.status_code == 200
    assert created.json()["record"]["expiresAt"] is not None
    past = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    refused = admin.post("/api/tokens", json={"name": "temp", "expiresAt": past})
    assert refused.status_code == 400
    assert "expiresAt" in refused.json()["error"]
    naive = admin.post("/api/tokens", json={"name": "temp", "expiresAt": "2030-01-01T00:00:00"})
    assert naive.status_code == 400


def test_another_users_token_is_not_found(admin: httpx.Client, other_user: httpx.Client) -> None:
    mine = admin.post("/api/tokens", json={"name": "mine"}).json()["record"]["id"]
    response = other_user.delete(f"/api/tokens/{mine}")
    assert response.status_code == 404
    assert response.json() == {"error": "Not Found"}
    assert [t["id"] for t in admin.get("/api/tokens").json()["tokens"]] == [mine]


def test_database_holds_no_plaintext_token(
    admin: httpx.Client, settings: Settings, database_url: str
) -> None:
    plaintext = mint_token(admin, "secret")
    admin.get("/api/tokens", headers={"Authorization": f"Bearer {plaintext}"})
    if database_url.startswith("sqlite"):
        data_files = [p for p in Path(settings.data_dir).rglob("*") if p.is_file()]
        db_files = [Path(database_url.removeprefix("sqlite:///"))]
        db_files += [p.with_name(p.name + s) for p in db_files for s in ("-wal", "-shm")]
        for path in data_files + [p for p in db_files if p.exists()]:
            assert plaintext.encode() not in path.read_bytes(), path
    else:
        schema = database_url.rsplit("%3D", 1)[1]
        with psycopg.connect(POSTGRES_DSN) as conn:
            rows = conn.execute(f'SELECT * FROM "{schema}".api_tokens').fetchall()
        assert rows
        assert plaintext not in repr(rows)
        assert plaintext[8:] not in repr(rows)
