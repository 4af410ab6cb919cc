"""``Idempotency-Key``: a retried POST gets the first one's answer instead of doing it twice.

A client that timed out on ``POST /api/instances`` cannot know whether an instance was made;
with a key, it retries safely. Keys are per user and per route, kept 24 hours. The first
request's work and the storing of its answer run shielded from the client, so a retry sent
after a disconnect finds the answer (or, while the work is still running, a 409 to retry later).

It stores and replays HTTP answers (status and body), so it belongs to the HTTP layer: the
work it wraps is a service call, whose errors it answers through ``errors.answer_for``.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from pydantic import BaseModel
from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from gentity.providers.compute.base import ProviderError, ProviderUnavailable
from gentity.server.context import AppContext
from gentity.server.db.ids import utcnow
from gentity.server.db.orm import IdempotencyKey
from gentity.server.errors import ApiError, answer_for
from gentity.server.services.errors import DomainError

TTL = timedelta(hours=24)
MAX_KEY_LENGTH = 255

Answer = tuple[int, dict[str, Any]]


def validate_key(key: str | None) -> str | None:
    if key is None:
        return None
    if not 1 <= len(key) <= MAX_KEY_LENGTH or not all(0x21 <= ord(c) <= 0x7E for c in key):
        raise ApiError(400, "Idempotency-Key: 1 to 255 printable ASCII characters, no spaces")
    return key


async def run_once(
    ctx: AppContext,
    user_id: str,
    key: str | None,
    scope: str,
    request: BaseModel,
    work: Callable[[], Awaitable[BaseModel]],
    status: int = 200,
) -> Answer:
    """Do ``work`` once per (user, scope, key) and answer with its result (as ``status``), or
    the stored one."""
    if key is None:
        return status, _dump(await work())
    digest = hashlib.sha256(request.model_dump_json().encode()).hexdigest()
    async with ctx.db.session() as db:
        cutoff = utcnow() - TTL
        found = await db.scalar(
            select(IdempotencyKey).where(
                IdempotencyKey.user_id == user_id,
                IdempotencyKey.scope == scope,
                IdempotencyKey.key == key,
                IdempotencyKey.created_at > cutoff,
            )
        )
        if found is not None:
            return _replay(found, digest)
        # An expired use of the same key makes room for this one.
        await db.execute(
            delete(IdempotencyKey).where(
                IdempotencyKey.user_id == user_id,
                IdempotencyKey.scope == scope,
                IdempotencyKey.key == key,
            )
        )
        claim = IdempotencyKey(user_id=user_id, scope=scope, key=key, request_hash=digest)
        db.add(claim)
        try:
            await db.commit()
        except IntegrityError:
            raise _in_progress() from None  # a concurrent retry claimed it first
        claim_id = claim.id
    task = asyncio.create_task(_do_and_store(ctx, claim_id, work, status))
    ctx.background.add(task)
    task.add_done_callback(ctx.background.discard)
    return await asyncio.shield(task)


async def _do_and_store(
    ctx: AppContext, claim_id: int, work: Callable[[], Awaitable[BaseModel]], status: int = 200
) -> Answer:
    try:
        answer: Answer = (status, _dump(await work()))
    except (ApiError, DomainError, ProviderError, ProviderUnavailable) as exc:
        status, message, _ = answer_for(exc)
        if status >= 500:
            # Nothing to replay for a failure that may pass on retry (the database, an upstream
            # hiccup): forget the key so that the retry does the work.
            await _forget(ctx, claim_id)
            raise
        answer = (status, {"error": message})
    except BaseException:
        await _forget(ctx, claim_id)
        raise
    async with ctx.db.session() as db:
        await db.execute(
            update(IdempotencyKey)
            .where(IdempotencyKey.id == claim_id)
            .values(status_code=answer[0], response=answer[1])
        )
        await db.commit()
    return answer


async def _forget(ctx: AppContext, claim_id: int) -> None:
    try:
        async with ctx.db.session() as db:
            await db.execute(delete(IdempotencyKey).where(IdempotencyKey.id == claim_id))
            await db.commit()
    except Exception:  # noqa: S110 - it expires anyway; the original error is what matters
        pass


def _replay(found: IdempotencyKey, digest: str) -> Answer:
    if found.request_hash != digest:
        raise ApiError(422, "Idempotency-Key was already used for a different request")
    if found.status_code is None or found.response is None:
        raise _in_progress()
    return found.status_code, dict(found.response)


def _in_progress() -> ApiError:
    return ApiError(
        409,
        "a request with this Idempotency-Key is still in progress",
        headers={"Retry-After": "2"},
    )


def _dump(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(mode="json", by_alias=True)
