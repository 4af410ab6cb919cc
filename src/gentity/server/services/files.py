"""An instance's files: listed, read, written and deleted through its guest, so the same on
every provider, and only while the instance runs.

The server never opens a path of an instance on its host (it runs as root, and the volume is
the instance's to fill with links): the guest resolves every path inside the volume, see
:mod:`gentity.guest.files`. Contents stream through in frames both ways, never held whole.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from typing import NoReturn

from gentity import models
from gentity.guest import client as guest_client
from gentity.guest.client import FileDownload
from gentity.models import InstanceStatus
from gentity.server.context import AppContext
from gentity.server.db.orm import Instance
from gentity.server.services.errors import Conflict, InvalidInput, NotFound, UpstreamFailed
from gentity.server.services.instances import get_owned, guest_secret, handle_of, provider_for

#: Longest path accepted (the kernel's PATH_MAX).
MAX_PATH = 4096


class Download:
    """A file on its way out of the instance: ``size`` bytes from :meth:`chunks`."""

    def __init__(self, stream: FileDownload) -> None:
        self._stream = stream
        self.size = stream.size

    async def chunks(self) -> AsyncIterator[bytes]:
        """The bytes; a short stream (the file changed, the instance stopped) raises, which
        breaks the response off instead of ending it cleanly."""
        async for chunk in self._stream.chunks():
            yield chunk

    async def aclose(self) -> None:
        await self._stream.aclose()


def check_path(path: str) -> str:
    """The path as given, if it can be one; the guest does the real checks."""
    if not path:
        raise InvalidInput("path: required")
    if "\0" in path or len(path.encode(errors="surrogatepass")) > MAX_PATH:
        raise InvalidInput("path: not a valid path")
    return path


def _guest(ctx: AppContext, row: Instance) -> guest_client.GuestEndpoint:
    if row.status != InstanceStatus.RUNNING.value:
        raise Conflict(
            f"the instance is {row.status}; its files can be reached only while it runs, "
            "start it first"
        )
    return provider_for(ctx, row).guest_endpoint(handle_of(row))


def _fail(exc: guest_client.GuestError, endpoint: guest_client.GuestEndpoint) -> NoReturn:
    if isinstance(exc, guest_client.GuestRefused):
        kind = {"missing": NotFound, "conflict": Conflict}.get(exc.reason, InvalidInput)
        raise kind(str(exc)) from exc
    # The guest's address is the provider's business, not the user's.
    raise UpstreamFailed(str(exc).replace(f" at {endpoint.address}", "")) from exc


async def get(ctx: AppContext, row: Instance, path: str) -> models.FileList | Download:
    """A directory's entries, or a file to stream."""
    endpoint = _guest(ctx, row)
    try:
        answer = await guest_client.get_file(endpoint, guest_secret(ctx, row), check_path(path))
    except guest_client.GuestError as exc:
        _fail(exc, endpoint)
    if isinstance(answer, FileDownload):
        return Download(answer)
    try:
        return models.FileList.model_validate(answer)
    except ValueError as exc:
        raise UpstreamFailed("the instance sent an invalid directory listing") from exc


async def put(
    ctx: AppContext, user_id: str, instance_id: str, path: str, body: AsyncIterable[bytes]
) -> tuple[models.FileWritten, bool]:
    """Write ``body`` to ``path`` in the caller's instance (parents made; in place only once
    complete). Returns what was written and whether the file is new. Holds no database
    session while the body streams."""
    async with ctx.db.session() as db:
        row = await get_owned(db, user_id, instance_id)
    endpoint = _guest(ctx, row)
    try:
        answer = await guest_client.put_file(
            endpoint, guest_secret(ctx, row), check_path(path), body
        )
    except guest_client.GuestError as exc:
        _fail(exc, endpoint)
    return models.FileWritten.model_validate(answer), answer.get("created") is True


async def delete(ctx: AppContext, row: Instance, path: str, *, recursive: bool) -> None:
    """Remove a file, a link or an empty directory (a whole tree with ``recursive``)."""
    endpoint = _guest(ctx, row)
    try:
        await guest_client.delete_file(
            endpoint, guest_secret(ctx, row), check_path(path), recursive=recursive
        )
    except guest_client.GuestError as exc:
        _fail(exc, endpoint)
