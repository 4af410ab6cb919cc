"""The instance's files, as the guest reads and writes them for the control plane.

Every path is confined to the volume root the guest was configured with (``root``; a relative
path starts in the agent's working directory). A requested path must not contain ``..``; it
is then resolved one component at a time from a descriptor of the root, each opened with
``O_NOFOLLOW`` relative to its parent's descriptor, so nothing swapped in between a check and
its use can lead out. A symbolic link met on the way is followed by hand: its target is walked
the same way (``..`` in a target only climbs directories already opened, never above the
root; an absolute target must name a place under the root), like ``openat2``'s
``RESOLVE_IN_ROOT`` but refusing instead of clamping. The last component is opened with
``O_NOFOLLOW`` too: a link put there after the walk makes the request fail, never escape.

Written files are born in the same directory under a temporary name and renamed over the
target once complete (mode 0644, or the old file's permission bits without set-id or
group/other write), so a reader never sees half a file. Standard library only.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
import stat
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

#: How a refusal is classified, so the control plane can answer with the right status.
INVALID: Final = "invalid"
MISSING: Final = "missing"
CONFLICT: Final = "conflict"

#: Symbolic links followed in one resolution before giving up (as the kernel's ELOOP).
MAX_SYMLINKS: Final = 40
#: Longest accepted path (the kernel's PATH_MAX).
MAX_PATH: Final = 4096
#: Most entries one directory listing returns; ``truncated`` says when there were more.
MAX_ENTRIES: Final = 10_000
#: Bytes read from a file per frame.
CHUNK: Final = 256 * 1024

_DIR_FLAGS: Final = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
#: Set-id bits, sticky and write for group and others never survive into a written file.
_KEPT_MODE: Final = 0o755


class FileRefused(Exception):
    """The request cannot be done: ``code`` is INVALID, MISSING or CONFLICT, the message says
    why in words the user can act on (paths as they asked, never the guest's own)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _parts(path: str) -> list[str]:
    return [c for c in path.split("/") if c not in ("", ".")]


@dataclass
class Place:
    """Where a resolved path is: the name ``name`` in the directory ``dir_fd`` (an
    ``O_PATH`` descriptor), or the directory ``dir_fd`` itself when ``name`` is None."""

    dir_fd: int
    name: str | None
    owned: list[int]

    def close(self) -> None:
        for fd in self.owned:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.owned.clear()

    def __enter__(self) -> Place:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class Volume:
    """The files below ``root``; relative paths start at ``workdir``."""

    def __init__(self, root: str, workdir: str) -> None:
        self.root = os.path.normpath(root)
        self.workdir = os.path.normpath(workdir)
        self._root_parts = _parts(self.root)

    def display(self, parts: list[str]) -> str:
        """The absolute path (as the instance sees it) of ``parts`` below the root."""
        return "/" + "/".join([*self._root_parts, *parts])

    def requested(self, path: object) -> list[str]:
        """The components below the root of a requested path; FileRefused if it is malformed,
        holds ``..`` or is an absolute path outside the root."""
        if not isinstance(path, str) or not path:
            raise FileRefused(INVALID, "path is required")
        if "\0" in path or len(path.encode(errors="surrogateescape")) > MAX_PATH:
            raise FileRefused(INVALID, "path is not a valid path")
        if ".." in path.split("/"):
            raise FileRefused(INVALID, "path must not contain '..'")
        absolute = path if path.startswith("/") else f"{self.workdir}/{path}"
        parts = _parts(absolute)
        if parts[: len(self._root_parts)] != self._root_parts:
            raise FileRefused(INVALID, f"{path} is outside the instance's volume ({self.root})")
        return parts[len(self._root_parts) :]

    def resolve(self, path: object, *, follow_last: bool, make_parents: bool = False) -> Place:
        """Resolve ``path`` below the root (see the module's docstring).

        Directories on the way must exist (or are made, with ``make_parents``); the last
        component need not. With ``follow_last`` a link in last place is followed too.
        """
        pending = deque(self.requested(path))
        root_fd = os.open(self.root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        stack = [root_fd]
        place = Place(root_fd, None, stack)
        try:
            self._walk(stack, pending, follow_last, make_parents, str(path))
        except OSError as exc:  # a permission, or a directory swapped for a link meanwhile
            place.close()
            raise refusal(exc, str(path)) from None
        except BaseException:
            place.close()
            raise
        place.dir_fd = stack[-1]
        place.name = pending[0] if pending else None
        return place

    def _walk(
        self, stack: list[int], pending: deque[str], follow_last: bool, make: bool, asked: str
    ) -> None:
        """Open directories onto ``stack`` until ``pending`` holds at most the last name."""
        links = 0
        while pending:
            name = pending[0]
            if name == "..":  # only from a link's target: climb what is already open
                pending.popleft()
                if len(stack) == 1:
                    raise FileRefused(INVALID, _leads_out(asked))
                os.close(stack.pop())
                continue
            last = len(pending) == 1
            try:
                fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=stack[-1])
            except FileNotFoundError:
                if last:
                    return
                if not make:
                    raise FileRefused(MISSING, f"{asked}: no such file or directory") from None
                fd = self._make_dir(stack[-1], name, asked)
            except OSError as exc:
                raise FileRefused(INVALID, f"{asked}: {exc.strerror or exc}") from None
            mode = os.fstat(fd).st_mode
            if stat.S_ISLNK(mode):
                os.close(fd)
                if last and not follow_last:
                    return
                links += 1
                if links > MAX_SYMLINKS:
                    raise FileRefused(INVALID, f"{asked}: too many levels of symbolic links")
                target = os.readlink(name, dir_fd=stack[-1])
                pending.popleft()
                if target.startswith("/"):
                    parts = _parts(target)
                    if parts[: len(self._root_parts)] != self._root_parts:
                        raise FileRefused(INVALID, _leads_out(asked))
                    while len(stack) > 1:
                        os.close(stack.pop())
                    target_parts = parts[len(self._root_parts) :]
                else:
                    target_parts = [c for c in target.split("/") if c not in ("", ".")]
                pending.extendleft(reversed(target_parts))
                continue
            if last:
                os.close(fd)
                return
            if not stat.S_ISDIR(mode):
                os.close(fd)
                raise FileRefused(INVALID, f"{asked}: a component of the path is not a directory")
            stack.append(fd)
            pending.popleft()

    def _make_dir(self, dir_fd: int, name: str, asked: str) -> int:
        made = True
        try:
            os.mkdir(name, 0o755, dir_fd=dir_fd)
        except FileExistsError:
            made = False  # made meanwhile; opened below without following anything
        except OSError as exc:
            raise FileRefused(INVALID, f"{asked}: cannot make {name}: {exc.strerror}") from None
        as_root = os.geteuid() == 0
        # As root the directory is opened for real (an O_PATH descriptor cannot be chowned),
        # and what is given away is that descriptor: the very directory walked into next,
        # never whatever the name points at by then (the instance may swap in a link).
        flags = (
            (os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC) if as_root else _DIR_FLAGS
        )
        try:
            fd = os.open(name, flags, dir_fd=dir_fd)
        except OSError as exc:
            raise FileRefused(INVALID, f"{asked}: cannot open {name}: {exc.strerror}") from None
        if as_root and made:
            try:
                _give_dir_to_owner(fd, dir_fd)
            except OSError as exc:
                os.close(fd)
                raise FileRefused(
                    INVALID, f"{asked}: cannot give {name} away: {exc.strerror}"
                ) from None
        return fd

    # --- the operations --------------------------------------------------------------------

    def stat(self, path: object) -> tuple[Place, os.stat_result]:
        """The resolved place of ``path`` (links followed) and what is there; the caller
        closes the place."""
        place = self.resolve(path, follow_last=True)
        try:
            st = (
                os.stat(place.name, dir_fd=place.dir_fd, follow_symlinks=False)
                if place.name is not None
                else os.fstat(place.dir_fd)
            )
        except FileNotFoundError:
            place.close()
            raise FileRefused(MISSING, f"{path}: no such file or directory") from None
        return place, st

    def list(self, place: Place) -> dict[str, Any]:
        """The entries of the directory at ``place``: name, type, size, modifiedAt."""
        fd = _open_at(place, os.O_RDONLY | os.O_DIRECTORY)
        entries: list[dict[str, Any]] = []
        truncated = False
        try:
            with os.scandir(fd) as listing:
                for entry in listing:
                    if len(entries) >= MAX_ENTRIES:
                        truncated = True
                        break
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue  # removed meanwhile
                    entries.append(_entry(entry.name, st))
        finally:
            os.close(fd)
        entries.sort(key=lambda e: e["name"])
        return {"type": "directory", "entries": entries, "truncated": truncated}

    def open_read(self, place: Place) -> tuple[int, int]:
        """Open the regular file at ``place`` for reading: (descriptor, size)."""
        flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY
        fd = _open_at(place, flags)
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise FileRefused(INVALID, "not a regular file or a directory")
        return fd, st.st_size

    def open_write(self, path: object) -> Upload:
        """Start writing ``path``: parents are made, the data goes to a temporary file
        beside it until :meth:`Upload.commit`."""
        place = self.resolve(path, follow_last=False, make_parents=True)
        try:
            if place.name is None:
                raise FileRefused(CONFLICT, f"{path} is a directory")
            mode, existed = 0o644, False
            with contextlib.suppress(FileNotFoundError):
                old = os.stat(place.name, dir_fd=place.dir_fd, follow_symlinks=False)
                existed = True
                if stat.S_ISDIR(old.st_mode):
                    raise FileRefused(CONFLICT, f"{path} is a directory")
                if stat.S_ISREG(old.st_mode):
                    mode = stat.S_IMODE(old.st_mode) & _KEPT_MODE
            temp = f".gentity-upload-{secrets.token_hex(8)}"
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            try:
                fd = os.open(temp, flags, mode, dir_fd=place.dir_fd)
            except OSError as exc:
                raise refusal(exc, str(path)) from None
            os.fchmod(fd, mode)  # whatever the umask: exactly these bits
            _give_to_owner(fd, place.dir_fd)
        except BaseException:
            place.close()
            raise
        return Upload(place, fd, temp, existed, self.display(self.requested(path)))

    def delete(self, path: object, *, recursive: bool) -> str:
        """Remove a file, a link (not what it points to) or an empty directory (any
        directory with ``recursive``); returns what it was."""
        with self.resolve(path, follow_last=False) as place:
            if place.name is None:
                raise FileRefused(INVALID, "the volume's root cannot be deleted")
            try:
                st = os.stat(place.name, dir_fd=place.dir_fd, follow_symlinks=False)
                if not stat.S_ISDIR(st.st_mode):
                    os.unlink(place.name, dir_fd=place.dir_fd)
                elif recursive:
                    # fd-based, never follows a link: safe against swaps (avoids_symlink_attacks)
                    shutil.rmtree(place.name, dir_fd=place.dir_fd)
                else:
                    os.rmdir(place.name, dir_fd=place.dir_fd)
            except FileNotFoundError:
                raise FileRefused(MISSING, f"{path}: no such file or directory") from None
            except OSError as exc:
                if exc.errno == errno.ENOTEMPTY:
                    raise FileRefused(
                        CONFLICT, f"{path} is a directory that is not empty (delete recursively)"
                    ) from None
                raise FileRefused(INVALID, f"{path}: {exc.strerror or exc}") from None
            return _kind(st.st_mode)


class Upload:
    """A file being written: :meth:`write` the data, then :meth:`commit` or :meth:`abort`."""

    def __init__(self, place: Place, fd: int, temp: str, existed: bool, path: str) -> None:
        self._place = place
        self._fd = fd
        self._temp = temp
        self.existed = existed
        self.path = path
        self.size = 0

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        self.size += len(data)

    def commit(self) -> None:
        """Make the data durable and put it in place (replacing what was there)."""
        assert self._place.name is not None
        try:
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1
            os.rename(
                self._temp,
                self._place.name,
                src_dir_fd=self._place.dir_fd,
                dst_dir_fd=self._place.dir_fd,
            )
        except OSError as exc:
            self.abort()
            if isinstance(exc, IsADirectoryError):
                raise FileRefused(CONFLICT, f"{self.path} is a directory") from None
            raise refusal(exc, self.path) from None
        self._place.close()

    def abort(self) -> None:
        """Drop the temporary file (nothing changed in place)."""
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = -1
        if self._place.owned:
            with contextlib.suppress(OSError):
                os.unlink(self._temp, dir_fd=self._place.dir_fd)
        self._place.close()


def _open_at(place: Place, flags: int) -> int:
    """Open what ``place`` names, following nothing (a link swapped in meanwhile fails)."""
    try:
        return os.open(
            place.name if place.name is not None else ".",
            flags | os.O_NOFOLLOW | os.O_CLOEXEC,
            dir_fd=place.dir_fd,
        )
    except FileNotFoundError:
        raise FileRefused(MISSING, "no such file or directory") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # a link appeared in last place after the walk
            raise FileRefused(INVALID, "the path changed while it was resolved") from None
        raise FileRefused(INVALID, exc.strerror or str(exc)) from None


def refusal(exc: OSError, what: str) -> FileRefused:
    """A refusal in words for an operating system error on ``what``: a full volume is a
    conflict (the request was fine), anything else a request that cannot be done."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return FileRefused(CONFLICT, "the instance's volume is full")
    return FileRefused(INVALID, f"{what}: {(exc.strerror or str(exc)).lower()}")


def _leads_out(asked: str) -> str:
    return f"a symbolic link in {asked} leads out of the instance's volume"


def _give_to_owner(fd: int, dir_fd: int) -> None:
    """A guest running as root (some providers' machines) makes files for the user who owns
    the directory, never for root."""
    if os.geteuid() != 0:
        return
    owner = os.fstat(dir_fd)
    os.fchown(fd, owner.st_uid, owner.st_gid)


def _give_dir_to_owner(fd: int, dir_fd: int) -> None:
    """Give a directory this (root) guest just made to the owner of its parent. Only one that
    is still root's and empty, as it was made: anything else at that name by now was put
    there by someone else, and keeps its owner."""
    if os.fstat(fd).st_uid != os.geteuid() or os.listdir(fd):
        return
    owner = os.fstat(dir_fd)
    os.fchown(fd, owner.st_uid, owner.st_gid)


def _kind(mode: int) -> str:
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "directory"
    if stat.S_ISLNK(mode):
        return "symlink"
    return "other"


def _entry(name: str, st: os.stat_result) -> dict[str, Any]:
    modified = datetime.fromtimestamp(st.st_mtime, UTC).isoformat().replace("+00:00", "Z")
    return {"name": name, "type": _kind(st.st_mode), "size": st.st_size, "modifiedAt": modified}
