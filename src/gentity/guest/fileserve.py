"""The file ops of the guest protocol: ``file_get``, ``file_put`` and ``file_delete``.

``file_get`` answers ``{"ok", "type": "directory", "truncated"}`` for a directory and then
sends its entries as JSON arrays in data frames (a few hundred a frame, so the client's read
buffer stays small) and an end frame; or ``{"ok", "type": "file", "size"}`` for a file and
then its bytes in data frames and an empty end frame (a file that shrank meanwhile ends the
connection without one).
``file_put`` answers ``{"ok": true}`` once the temporary file exists, reads data frames until
an end frame, then answers ``{"ok", "path", "size", "created"}``; a client that goes away
first leaves nothing behind. ``file_delete`` (``recursive`` for a tree) answers
``{"ok", "type"}``. Refusals carry a ``code`` (``invalid``, ``missing``, ``conflict``).

Every op counts as activity of the instance (``Launcher.touch``), for auto-stop.
Standard library only; disk work runs in threads so terminals stay live meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import stat
from collections.abc import Callable
from typing import Any, Final

from gentity.guest import protocol as p
from gentity.guest.files import CHUNK, FileRefused, Upload, Volume, refusal

#: Directory entries per data frame: even names of 255 escaped control characters fit a frame.
ENTRIES_PER_FRAME: Final = 256

Reply = Callable[[asyncio.StreamWriter, dict[str, Any]], None]


async def serve(
    volume: Volume,
    touch: Callable[[], None],
    request: dict[str, Any],
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    reply: Reply,
) -> None:
    """Answer one file op (``request["op"]`` is one of :data:`protocol.FILE_OPS`)."""
    touch()
    op, path = request["op"], request.get("path")
    try:
        if op == p.OP_FILE_GET:
            await _get(volume, touch, path, writer, reply)
        elif op == p.OP_FILE_PUT:
            await _put(volume, touch, path, reader, writer, reply)
        else:
            recursive = request.get("recursive", False) is True
            kind = await asyncio.to_thread(volume.delete, path, recursive=recursive)
            reply(writer, {"ok": True, "type": kind})
    except FileRefused as exc:
        reply(writer, {"ok": False, "error": exc.message, "reason": exc.code})
    except ConnectionError:
        raise  # the client went away: nobody to answer
    except OSError as exc:  # what the walk did not foresee: still an answer, not a hang-up
        failed = refusal(exc, str(path))
        reply(writer, {"ok": False, "error": failed.message, "reason": failed.code})
    finally:
        touch()


async def _get(
    volume: Volume,
    touch: Callable[[], None],
    path: object,
    writer: asyncio.StreamWriter,
    reply: Reply,
) -> None:
    place, st = volume.stat(path)
    with place:
        if stat.S_ISDIR(st.st_mode):
            listing = await asyncio.to_thread(volume.list, place)
            entries = listing["entries"]
            reply(writer, {"ok": True, "type": "directory", "truncated": listing["truncated"]})
            for start in range(0, len(entries), ENTRIES_PER_FRAME):
                batch = json.dumps(entries[start : start + ENTRIES_PER_FRAME]).encode()
                writer.write(p.encode_frame(p.FRAME_DATA, batch))
                await writer.drain()
            writer.write(p.encode_frame(p.FRAME_END, b""))
            await writer.drain()
            return
        fd, size = volume.open_read(place)
    try:
        reply(writer, {"ok": True, "type": "file", "size": size})
        left = size
        while left > 0:
            try:
                data = await asyncio.to_thread(os.read, fd, min(CHUNK, left))
            except OSError:
                data = b""  # answered already: all that can be said is that the copy ends
            if not data:
                return  # it shrank: no end frame, so the client knows the copy is short
            left -= len(data)
            writer.write(p.encode_frame(p.FRAME_DATA, data))
            await writer.drain()  # a slow client slows its own copy, nobody else
            touch()
        writer.write(p.encode_frame(p.FRAME_END, b""))
        await writer.drain()
    finally:
        os.close(fd)


async def _put(
    volume: Volume,
    touch: Callable[[], None],
    path: object,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    reply: Reply,
) -> None:
    upload: Upload = await asyncio.to_thread(volume.open_write, path)
    committed = False
    failed: OSError | None = None
    try:
        reply(writer, {"ok": True})
        while True:
            frame = await p.read_frame(reader)
            if frame is None:
                return  # the client went away before the end: nothing changes
            kind, payload = frame
            if kind == p.FRAME_END:
                break
            if kind == p.FRAME_DATA and payload and failed is None:
                try:
                    await asyncio.to_thread(upload.write, payload)
                except OSError as exc:
                    # A full volume: drop the rest, so the client hears why instead of a
                    # connection cut in the middle of its upload.
                    failed = exc
                    upload.abort()
                touch()
        if failed is not None:
            raise failed
        await asyncio.to_thread(upload.commit)
        committed = True
        reply(
            writer,
            {"ok": True, "path": upload.path, "size": upload.size, "created": not upload.existed},
        )
    finally:
        if not committed:
            with contextlib.suppress(OSError):
                upload.abort()
