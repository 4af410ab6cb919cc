"""What the sync and async clients share for an instance's files: paths, parameters, how a
download or listing answer is told apart, and reading a local source in pieces."""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import IO, Final

import httpx

from gentity import models
from gentity.client.calls import Call, _seg
from gentity.client.errors import ApiError

#: Bytes read from a local file per piece of an upload.
CHUNK: Final = 256 * 1024

Source = bytes | os.PathLike[str] | IO[bytes]
"""What :meth:`upload` sends: the bytes themselves, a local file by path (a ``Path``, not a
``str``, so that text is never mistaken for a file name), or a binary file object."""

Target = os.PathLike[str] | str | IO[bytes]
"""Where :meth:`download_to` writes: a local path or a binary file object."""


def files_path(instance_id: str) -> str:
    return f"/api/instances/{_seg(instance_id)}/files"


def params(path: str | None) -> dict[str, str]:
    return {} if path is None else {"path": path}


def delete_call(instance_id: str, path: str, recursive: bool) -> Call[None]:
    query = {"path": path, **({"recursive": "1"} if recursive else {})}
    return Call("DELETE", files_path(instance_id), lambda _: None, params=query)


def is_listing(response: httpx.Response) -> bool:
    content_type: str = response.headers.get("content-type", "")
    return content_type.startswith("application/json")


def not_a_directory(path: str | None) -> ApiError:
    return ApiError(400, f"{path} is a file, not a directory; download it instead")


def not_a_file(path: str) -> ApiError:
    return ApiError(400, f"{path} is a directory, not a file; list it instead")


def listing(response: httpx.Response) -> models.FileList:
    return models.FileList.model_validate(response.json())


def written(response: httpx.Response) -> models.FileWritten:
    return models.FileWritten.model_validate(response.json())


def size_of(file: IO[bytes]) -> int | None:
    """The bytes left in a regular file from its position (for ``Content-Length``, so an
    upload over the server's limit is refused before it is sent); None for a pipe."""
    try:
        st = os.fstat(file.fileno())
        return st.st_size - file.tell() if stat.S_ISREG(st.st_mode) else None
    except (OSError, ValueError, AttributeError):
        return None


def pieces(source: Source) -> tuple[bytes | None, IO[bytes] | None, bool]:
    """``(data, file, opened_here)``: the bytes to send at once, or a file to send in pieces
    (to close afterwards when ``opened_here``)."""
    if isinstance(source, bytes | bytearray | memoryview):
        return bytes(source), None, False
    if isinstance(source, str):
        raise TypeError("upload() takes bytes, a pathlib.Path or a binary file, not a str")
    if isinstance(source, os.PathLike):
        return None, open(source, "rb"), True
    return None, source, False


def read_pieces(file: IO[bytes]) -> Iterator[bytes]:
    while chunk := file.read(CHUNK):
        yield chunk


async def aread_pieces(file: IO[bytes]) -> AsyncIterator[bytes]:
    """:func:`read_pieces` for the async client: each read in a thread."""
    while chunk := await asyncio.to_thread(file.read, CHUNK):
        yield chunk


def open_target(target: Target) -> tuple[IO[bytes], bool]:
    """The file to write a download into, and whether it was opened here."""
    if isinstance(target, str | os.PathLike):
        return open(Path(target), "wb"), True
    return target, False
