"""``/api/instances/{id}/files``: list, download, upload and delete an instance's files.

Contents stream both ways: a download is answered as the guest reads the file, an upload is
sent on to the guest as it arrives (its size limit, ``GENTITY_MAX_UPLOAD_BYTES``, is applied by
``BodySizeLimit`` for the paths of :data:`UPLOAD_PATH`).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Query, Request
from pydantic import WithJsonSchema
from starlette.requests import ClientDisconnect
from starlette.responses import JSONResponse, StreamingResponse

from gentity import models
from gentity.server.auth import Auth, AuthFirstRoute, Ctx, Db
from gentity.server.errors import ApiError
from gentity.server.openapi import errors
from gentity.server.params import parse_flag
from gentity.server.services import files, instances

router = APIRouter(prefix="/api/instances", tags=["files"], route_class=AuthFirstRoute)

UPLOAD_PATH = re.compile(r"/api/instances/[^/]+/files")
"""The path whose ``PUT`` bodies get the upload limit instead of ``GENTITY_MAX_BODY_BYTES``."""

_PATH_SCHEMA = WithJsonSchema({"type": "string", "minLength": 1, "maxLength": files.MAX_PATH})
_FILE = {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}

# Optional to FastAPI so that an unknown instance is a 404 before a missing path is a 400.
PathParam = Annotated[
    str | None,
    Query(
        description="A path in the instance: relative to the agent's working directory, or "
        "absolute below its home (the volume); '..' is refused"
    ),
    _PATH_SCHEMA,
]


@router.get(
    "/{instance_id}/files",
    response_model=models.FileList,
    responses={200: {"content": _FILE}, **errors(409, 502)},
)
async def get_file(
    instance_id: str,
    principal: Auth,
    ctx: Ctx,
    db: Db,
    path: Annotated[
        str | None,
        Query(
            description="A path in the instance: relative to the agent's working directory, "
            "or absolute below its home (the volume); '..' is refused. Default: the working "
            "directory"
        ),
        _PATH_SCHEMA,
    ] = None,
) -> models.FileList | StreamingResponse:
    """A file's bytes (``application/octet-stream``), or a directory's entries."""
    row = await instances.get_owned(db, principal.user.id, instance_id)
    found = await files.get(ctx, row, "." if path is None else path)
    if isinstance(found, models.FileList):
        return found
    name = (path or "").rstrip("/").rpartition("/")[2] or "file"
    return StreamingResponse(
        _body(found),
        media_type="application/octet-stream",
        headers={
            "Content-Length": str(found.size),
            "Content-Disposition": f"attachment; filename*=UTF-8''{quote(name, safe='')}",
            "Cache-Control": "no-store",
        },
    )


async def _body(download: files.Download) -> AsyncIterator[bytes]:
    try:
        async for chunk in download.chunks():
            yield chunk
    finally:  # also when the client goes away: the guest's side closes at once
        await download.aclose()


@router.put(
    "/{instance_id}/files",
    response_model=models.FileWritten,
    status_code=200,
    responses={201: {"model": models.FileWritten}, **errors(409, 413, 502)},
    openapi_extra={"requestBody": {"required": True, "content": _FILE}},
)
async def put_file(
    instance_id: str, request: Request, principal: Auth, ctx: Ctx, path: PathParam = None
) -> JSONResponse:
    """Write the body to ``path``: parents are made, the file replaced atomically once all of
    it arrived (201 when it is new, 200 when it replaced one)."""
    # No Db: an upload may take minutes and must not hold a pooled connection meanwhile.
    try:
        written, created = await files.put(
            ctx, principal.user.id, instance_id, path or "", request.stream()
        )
    except ClientDisconnect:  # nobody to answer; the guest dropped its temporary file
        raise ApiError(400, "the upload was cut off") from None
    body: dict[str, Any] = written.model_dump(mode="json", by_alias=True)
    return JSONResponse(body, status_code=201 if created else 200)


@router.delete("/{instance_id}/files", response_model=models.Ok, responses=errors(409, 502))
async def delete_file(
    instance_id: str,
    principal: Auth,
    ctx: Ctx,
    db: Db,
    path: PathParam = None,
    recursive: Annotated[
        str | None,
        Query(description="1 (or true) to delete a directory with everything in it"),
        WithJsonSchema({"anyOf": [{"type": "boolean"}, {"type": "integer", "enum": [0, 1]}]}),
    ] = None,
) -> models.Ok:
    """Delete a file, a symbolic link (not what it points to) or an empty directory."""
    deep = parse_flag(recursive, "recursive")
    row = await instances.get_owned(db, principal.user.id, instance_id)
    await files.delete(ctx, row, path or "", recursive=deep)
    return models.Ok()
