"""``gentity compute cp``, ``ls-files`` and ``rm-file``: an instance's files from here.

One side of ``cp`` is ``ID:PATH`` (the instance; a relative PATH starts in its working
directory), the other a local path or ``-`` for stdin/stdout. A local path with a colon in it
is written ``./a:b``. Contents stream: nothing is held whole in memory.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer

from gentity import models
from gentity.cli import completion
from gentity.cli.output import JsonFlag, fail, note, print_json, table, when
from gentity.cli.resolve import find_instance, not_found_message
from gentity.client import ApiError, Client

InstanceId = Annotated[
    str,
    typer.Argument(
        metavar="ID",
        help="The instance: its id, a unique start of it, or its name (see: gentity compute ls).",
        autocompletion=completion.instance_refs,
    ),
]


@contextlib.contextmanager
def instance_gone(ref: str) -> Iterator[None]:
    """Name the instance when it vanished meanwhile (its 404 says only "Not Found"; a missing
    file's 404 says which file, and is left as it is)."""
    try:
        yield
    except ApiError as exc:
        if exc.status == 404 and exc.message == "Not Found":
            fail(not_found_message(ref))
        raise


def _remote(arg: str) -> tuple[str, str] | None:
    """``(instance ref, path)`` for ``ID:PATH``; None for a local path (``-``, or one that
    starts with ``/`` or ``.``, or has no colon)."""
    if arg == "-" or arg.startswith(("/", ".")) or ":" not in arg:
        return None
    ref, _, path = arg.partition(":")
    return (ref, path) if ref else None


def cp(
    source: Annotated[
        str, typer.Argument(metavar="SRC", help="ID:PATH, a local file, or - for stdin.")
    ],
    destination: Annotated[
        str, typer.Argument(metavar="DST", help="ID:PATH, a local path, or - for stdout.")
    ],
    as_json: JsonFlag = False,
) -> None:
    """Copy a file into an instance or out of it (the instance must be running).

    gentity compute cp notes.md ID:docs/ uploads into the working directory's docs/ (made if
    missing); gentity compute cp ID:out.log . downloads; - reads stdin or writes stdout.
    Uploads replace the file whole once all of it arrived.
    """
    remote_src, remote_dst = _remote(source), _remote(destination)
    if (remote_src is None) == (remote_dst is None):
        fail("exactly one of SRC and DST must be ID:PATH (a local path with a colon: ./a:b)")
    with Client() as client:
        if remote_dst is not None:
            written = _upload(client, source, *remote_dst)
            if as_json:
                print_json(written)
            else:
                note(f"Copied {written.size} bytes to {remote_dst[0]}:{written.path}")
        else:
            assert remote_src is not None
            size, where = _download(client, *remote_src, destination)
            if as_json:
                print_json({"path": where, "size": size})
            elif destination != "-":
                note(f"Copied {size} bytes to {where}")


def _upload(client: Client, source: str, ref: str, path: str) -> models.FileWritten:
    if not path or path.endswith("/"):  # into a directory: keep the file's name
        if source == "-":
            fail("give the file's name in the instance: ID:PATH, not ID:DIR/, for stdin")
        path += Path(source).name
    if source != "-" and not Path(source).is_file():
        fail(f"{source}: not a file")
    instance = find_instance(client, ref)
    with instance_gone(ref):
        if source == "-":
            return client.instances.upload(instance.id, path, sys.stdin.buffer)
        return client.instances.upload(instance.id, path, Path(source))


def _download(client: Client, ref: str, path: str, destination: str) -> tuple[int, str]:
    instance = find_instance(client, ref)
    if destination == "-":
        with instance_gone(ref):
            size = client.instances.download_to(instance.id, path, sys.stdout.buffer)
        sys.stdout.flush()
        return size, "-"
    target = Path(destination)
    if target.is_dir():
        target = target / (path.rstrip("/").rpartition("/")[2] or "file")
    # Into a temporary file beside the target, renamed once complete: a failed copy leaves
    # whatever was there before.
    fd, temp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, instance_gone(ref):
            size = client.instances.download_to(instance.id, path, out)
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    return size, str(target)


def ls_files(
    instance_id: InstanceId,
    path: Annotated[
        str | None,
        typer.Argument(help="A directory in the instance (default: its working directory)."),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """List a directory of a running instance: name, type, size, last change."""
    with Client() as client:
        found = find_instance(client, instance_id)
        with instance_gone(instance_id):
            listing = client.instances.list_files(found.id, path)
    if as_json:
        print_json(listing)
        return
    table(
        ["NAME", "TYPE", "SIZE", "MODIFIED"],
        (
            (
                e.name + ("/" if e.type is models.FileType.DIRECTORY else ""),
                e.type.value,
                str(e.size) if e.type is models.FileType.FILE else "-",
                when(e.modified_at),
            )
            for e in listing.entries
        ),
    )
    if listing.truncated:
        note("(more entries than a listing shows; list a subdirectory)")


def rm_file(
    instance_id: InstanceId,
    path: Annotated[str, typer.Argument(help="A file, link or directory in the instance.")],
    recursive: Annotated[
        bool, typer.Option("-r", "--recursive", help="Delete a directory and all it holds.")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Delete a file, a link (not what it points to) or an empty directory of a running
    instance; -r for a whole directory."""
    with Client() as client:
        found = find_instance(client, instance_id)
        with instance_gone(instance_id):
            client.instances.delete_file(found.id, path, recursive=recursive)
    if as_json:
        print_json({"ok": True})
    else:
        note(f"Deleted {path}.")
