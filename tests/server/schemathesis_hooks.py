"""Schemathesis hooks for ``test_openapi.py``, loaded by ``st`` through ``SCHEMATHESIS_HOOKS``.

The fuzzer revokes what it finds: ``GET /api/tokens`` lists the very token it authenticates
with and ``DELETE /api/tokens/{token_id}`` takes any id it has seen. So its credential is not a
fixed header but a token minted here, straight in the database (as ``gentity users create``
makes accounts), and minted anew whenever an answer is 401.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import schemathesis
from schemathesis import AuthContext, Case

from gentity.server.db.database import Database
from gentity.server.services import tokens

DATABASE_URL = "GENTITY_FUZZ_DATABASE_URL"
USER_ID = "GENTITY_FUZZ_USER_ID"


async def _mint() -> str:
    db = Database(os.environ[DATABASE_URL])
    try:
        async with db.session() as session:
            created = await tokens.mint(session, os.environ[USER_ID], "schemathesis", None)
    finally:
        await db.close()
    return created.token


@schemathesis.auth()
class MintedToken:
    def get(self, case: Case[Any], context: AuthContext) -> str:
        return asyncio.run(_mint())

    def set(self, case: Case[Any], data: str, context: AuthContext) -> None:
        case.headers["Authorization"] = f"Bearer {data}"
