"""Instance volumes with a hard size limit: one loop-mounted ext4 image per instance.

Layout, under an instance's root directory (root-owned, mode 0700, invisible to the instance)::

    <root>/volume.img   sparse ext4 image, mode 0600; its size is the volume's quota
    <root>/disk/        mount point (root-owned, 0700 while unmounted), mounted
                        nosuid,nodev,noatime; the fs root belongs to the instance's uid

A full volume gives the instance ``ENOSPC`` and leaves the host disk alone: the image only ever
grows to its size, and ``discard`` hands the space of deleted files back to the host. The image is
sparse, so quotas are not reservations: the sum of all quotas may exceed the free space (when the
host disk itself fills, writes in a volume fail with ``EIO`` and its fs turns read-only).

Mount propagation: every sandbox gets a copy of every mount that exists when it starts (other
instances' volumes included, hidden under a tmpfs). So that unmounting a volume also unmounts
those copies (and frees its loop device), the parent of the instance roots is made a *shared*
mount, by binding it onto itself once (:func:`create` and :func:`ensure_mounted` do it, unless
the mount holding it is shared already, as ``/`` is under systemd); bwrap turns the copies into
slaves, which follow the unmount. (Deleting the mount point, as :func:`destroy` does, detaches
the copies too, propagation or not.)

Without loop mounts (not root, no ``/dev/loop-control``, no ``mkfs.ext4``, a container without
``CAP_SYS_ADMIN``…) :func:`create` falls back to a plain directory owned by the instance's uid
and returns the reason, for the caller to log: the size is then not enforced.

Everything here blocks (subprocesses, each with a timeout): call it from a worker thread.
Every function is idempotent and serialised per instance root (a ``flock`` on the directory,
which also holds across server processes). Errors are :class:`VolumeError`, whose message is
safe to show a user; the details (host paths, tool output) go to the log.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from gentity.providers.compute.base import ProviderError

log = logging.getLogger(__name__)

IMAGE_NAME = "volume.img"
MOUNT_NAME = "disk"
MOUNT_OPTIONS = "loop,nosuid,nodev,noatime,discard,errors=remount-ro"
# Lazy inode-table and journal init: mkfs writes ~4 MB whatever the size (the image is a fresh
# sparse file, all zeros already). No reserved blocks: the instance gets its whole quota.
MKFS_OPTIONS = ["-q", "-F", "-t", "ext4", "-m", "0", "-L", "gentity"]
MKFS_EXTENDED = "lazy_itable_init=1,lazy_journal_init=1,nodiscard"
MAX_SIZE_GB = 16 * 1024
# Sbin directories are often missing from a service's PATH.
_TOOL_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_TOOLS = ("mkfs.ext4", "e2fsck", "resize2fs", "mount", "umount", "losetup")
QUICK_TIMEOUT = 30.0
FSCK_TIMEOUT = 600.0
UNMOUNT_TIMEOUT = 10.0
DESTROY_UNMOUNT_TIMEOUT = 2.0


class VolumeError(ProviderError):
    """A volume operation failed; the message is safe to show the user (no host paths)."""


# --- queries ----------------------------------------------------------------------------------


def image_path(root: Path) -> Path:
    return root / IMAGE_NAME


def mount_point(root: Path) -> Path:
    return root / MOUNT_NAME


@cache
def quota_support() -> str | None:
    """``None`` when size-limited volumes work on this host, else why not (one line).

    Checked once per process by really making, mounting and unmounting a small image.
    """
    if os.geteuid() != 0:
        return "loop mounts need root and the server does not run as root"
    if not Path("/dev/loop-control").exists():
        return "/dev/loop-control is missing (no loop device support)"
    missing = [tool for tool in _TOOLS if _which(tool) is None]
    if missing:
        return f"{', '.join(missing)} not found (install e2fsprogs, util-linux and mount)"
    probe = Path(tempfile.mkdtemp(prefix="gentity-volume-probe-"))
    try:
        image, target = probe / "probe.img", probe / "mnt"
        target.mkdir()
        with image.open("wb") as f:
            f.truncate(32 * 2**20)
        steps = (
            ["mkfs.ext4", *MKFS_OPTIONS, "-E", MKFS_EXTENDED, str(image)],
            ["mount", "-t", "ext4", "-o", MOUNT_OPTIONS, str(image), str(target)],
            ["umount", str(target)],
        )
        for argv in steps:
            try:
                result = _run(argv, QUICK_TIMEOUT, "probe")
            except VolumeError as exc:
                return f"{exc} while probing loop mounts"
            if result.returncode != 0:
                return f"{argv[0]} failed while probing loop mounts: {_output(result)}"
        return None
    finally:
        with contextlib.suppress(VolumeError):
            if os.path.ismount(probe / "mnt"):
                _run(["umount", "-l", str(probe / "mnt")], QUICK_TIMEOUT, "probe")
        shutil.rmtree(probe, ignore_errors=True)


def can_grow_online() -> bool:
    """Whether :func:`resize` can grow a mounted volume: ext4 wants ``CAP_SYS_RESOURCE``, which
    some container runtimes take even from root. (Unmounted volumes always can.)"""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return bool(int(line.split()[1], 16) & (1 << 24))  # CAP_SYS_RESOURCE
    return False


def is_limited(root: Path) -> bool:
    """Whether this volume is an image (size-limited) rather than a plain directory."""
    return image_path(root).exists()


def is_mounted(root: Path) -> bool:
    """Whether the volume's own image is what is mounted on its mount point."""
    return _mounted_device(root) is not None


def usage(root: Path) -> tuple[int, int]:
    """``(used, size)`` in bytes, as the instance sees its volume (``df``)."""
    info = os.statvfs(mount_point(root))
    size = info.f_blocks * info.f_frsize
    return size - info.f_bfree * info.f_frsize, size


# --- lifecycle --------------------------------------------------------------------------------


def create(root: Path, size_gb: int, uid: int, gid: int) -> str | None:
    """Make the volume (image, filesystem owned by ``uid:gid``) and mount it.

    Returns ``None``, or why the volume is a plain directory without a size limit. Creating a
    volume that exists mounts it if needed (the size of an existing image is left as it is).
    """
    if not 1 <= size_gb <= MAX_SIZE_GB:
        raise VolumeError(f"the volume size must be between 1 and {MAX_SIZE_GB} GB")
    if uid < 0 or gid < 0:
        raise ValueError("uid and gid must not be negative")
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    _keep_private(root)
    with _locked(root):
        target, image = _mount_point_dir(root), image_path(root)
        if image.exists():
            _mount(root)
            return None
        reason = quota_support()
        if reason is None and _mount_entries(target):
            log.error("%s is already a mount point, and not of the volume's image", target)
            raise VolumeError("could not create the volume: its mount point is in use")
        if reason is None and any(target.iterdir()):
            reason = "the volume already holds files from before size limits"
        if reason is not None:
            os.chown(target, uid, gid)
            target.chmod(0o755)
            return f"the volume's size is not enforced: {reason}"
        partial = image.with_name(IMAGE_NAME + ".partial")
        partial.unlink(missing_ok=True)
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.ftruncate(fd, size_gb * 2**30)
        finally:
            os.close(fd)
        extended = f"{MKFS_EXTENDED},root_owner={uid}:{gid}"
        _check(["mkfs.ext4", *MKFS_OPTIONS, "-E", extended, str(partial)], "create")
        partial.rename(image)  # only a complete filesystem ever has the final name
        _mount(root, fresh=True)
        return None


def ensure_mounted(root: Path) -> str | None:
    """Mount the volume unless it is (after a reboot, or after :func:`unmount`).

    Returns ``None``, or why the volume is a plain directory without a size limit. Call it
    before every start: a sandbox started on an unmounted volume would see an empty directory
    it cannot write to.
    """
    with _locked(root):
        if not image_path(root).exists():
            if not mount_point(root).is_dir():
                raise VolumeError("the instance's volume is missing")
            return "the volume's size is not enforced: it is a plain directory"
        _mount(root)
        return None


def unmount(root: Path, timeout: float = UNMOUNT_TIMEOUT) -> None:
    """Unmount the volume and free its loop device; nothing to do for a plain directory.

    Stop the instance's processes first: this waits up to ``timeout`` seconds for the
    filesystem to be unused (it never detaches it lazily), then raises.
    """
    if not root.is_dir():
        return
    with _locked(root):
        _unmount(root, timeout)


def destroy(root: Path, timeout: float = DESTROY_UNMOUNT_TIMEOUT) -> None:
    """Unmount the volume and delete it with all its data (image, or plain directory).

    A volume still in use after ``timeout`` (a log the control plane was following, still
    open) is detached lazily: its data is going anyway, and the last user lets go of it.
    The instance's root directory itself is left to the caller.
    """
    if not root.is_dir():
        return
    with _locked(root):
        try:
            _unmount(root, timeout)
        except VolumeError:
            log.warning("%s still in use at destroy: detached lazily", mount_point(root))
            _check(["umount", "--lazy", str(mount_point(root))], "unmount")
        image_path(root).unlink(missing_ok=True)
        image_path(root).with_name(IMAGE_NAME + ".partial").unlink(missing_ok=True)
        target = mount_point(root)
        if _mount_entries(target):  # never delete through a mount
            raise VolumeError("could not delete the volume: it is still mounted")
        if target.is_symlink():
            target.unlink()
        elif target.exists():
            shutil.rmtree(target)


def resize(root: Path, size_gb: int) -> None:
    """Grow a size-limited volume to ``size_gb``; shrinking is refused.

    Mounted, it grows online (only if :func:`can_grow_online`); unmounted, offline. A
    plain-directory volume has no size: nothing to do.
    """
    if not 1 <= size_gb <= MAX_SIZE_GB:
        raise VolumeError(f"the volume size must be between 1 and {MAX_SIZE_GB} GB")
    with _locked(root):
        image = image_path(root)
        if not image.exists():
            return
        new_size, old_size = size_gb * 2**30, image.stat().st_size
        if new_size < old_size:
            raise VolumeError("a volume can grow but not shrink")
        if new_size == old_size:
            return
        device = _mounted_device(root)
        if device is None and _loop_devices(image):
            log.error("%s is attached to a loop device but not mounted here", image)
            raise VolumeError("could not resize the volume: it is in use")
        os.truncate(image, new_size)
        if device is not None:
            _check(["losetup", "--set-capacity", device], "resize")
            _check(["resize2fs", device], "resize", timeout=FSCK_TIMEOUT)
            return
        # resize2fs works offline only on a freshly checked filesystem.
        result = _run(["e2fsck", "-f", "-p", str(image)], FSCK_TIMEOUT, "resize")
        if result.returncode & ~3:
            log.error("e2fsck -f -p %s exited %d: %s", image, result.returncode, _output(result))
            raise VolumeError("could not resize the volume: e2fsck failed")
        _check(["resize2fs", str(image)], "resize", timeout=FSCK_TIMEOUT)


# --- mounting ---------------------------------------------------------------------------------


def _mount(root: Path, *, fresh: bool = False) -> str:
    """Mount the image unless it already is; returns its loop device. Lock held."""
    target, image = _mount_point_dir(root), image_path(root)
    device = _mounted_device(root)
    if device is not None:
        return device
    if _mount_entries(target):
        log.error("%s is a mount point, but not of %s", target, image)
        raise VolumeError("could not mount the volume: its mount point is in use")
    _share_parent(root.parent)
    # After a crash the journal is replayed by the kernel anyway; e2fsck -p also repairs what
    # the kernel flagged. Never while a loop device (maybe mounted elsewhere) holds the image.
    if not fresh and not _loop_devices(image):
        result = _run(["e2fsck", "-p", str(image)], FSCK_TIMEOUT, "check")
        if result.returncode & ~3:  # 1: errors fixed; 2: "reboot", meaningless for an image
            log.error("e2fsck -p %s exited %d: %s", image, result.returncode, _output(result))
    # mount -o loop sets the loop device to detach itself on the last unmount (autoclear), and
    # reuses a device already attached to this image rather than attaching a second one.
    _check(["mount", "-t", "ext4", "-o", MOUNT_OPTIONS, str(image), str(target)], "mount")
    device = _mounted_device(root)
    if device is None:
        log.error("%s was mounted on %s but is not found there", image, target)
        raise VolumeError("could not mount the volume")
    lost = target / "lost+found"  # mkfs and e2fsck make it; the agent's home is nicer without
    with contextlib.suppress(OSError):
        if lost.lstat().st_uid == 0:
            lost.rmdir()  # only when empty: files e2fsck rescued stay
    return device


def _unmount(root: Path, timeout: float) -> None:
    target, image = mount_point(root), image_path(root)
    deadline = time.monotonic() + timeout
    while _mounted_device(root) is not None:
        result = _run(["umount", str(target)], QUICK_TIMEOUT, "unmount")
        if result.returncode == 0:
            continue  # a volume mounted twice on the same point is unmounted twice
        if time.monotonic() > deadline:
            log.error("umount %s: %s", target, _output(result))
            raise VolumeError("could not unmount the volume: it is still in use")
        time.sleep(0.1)
    for device in _loop_devices(image):
        # Not autoclear (attached by hand, or mounted by an older tool), or still mounted in
        # another mount namespace: then LOOP_CLR_FD only marks it to go with its last user.
        result = _run(["losetup", "--detach", device], QUICK_TIMEOUT, "unmount")
        if _loop_devices(image):
            log.warning(
                "%s (backing %s) is still attached after unmounting; it is probably still "
                "mounted in another mount namespace and goes when that ends: %s",
                device,
                image,
                _output(result),
            )


def _share_parent(parent: Path) -> None:
    """Make ``parent`` a shared mount (a bind onto itself) so unmounts reach sandboxes' copies."""
    with _locked(parent):  # two binds stacked by racing callers would both get every volume
        _share(os.path.realpath(parent))


def _share(path: str) -> None:
    entries = _mountinfo()
    holding = [entry for entry in entries if _is_within(path, entry.mount_point)]
    deepest = max(len(entry.mount_point) for entry in holding)
    containing = [entry for entry in holding if len(entry.mount_point) == deepest][-1]  # on top
    if containing.shared:
        return
    if containing.mount_point == path:
        _check(["mount", "--make-shared", path], "mount")
        return
    if any(_is_within(e.mount_point, path) for e in entries):
        # A bind now would hide those mounts under it; leave things as they are.
        log.warning(
            "%s holds mounts but is not a shared mount: unmounted volumes stay mounted in "
            "sandboxes started before, until those stop",
            path,
        )
        return
    _check(["mount", "--bind", path, path], "mount")
    _check(["mount", "--make-shared", path], "mount")


def release_parent(parent: Path) -> None:
    """Undo :func:`_share_parent`'s bind of ``parent`` onto itself once nothing is mounted
    below it (the server stops with no volume mounted), so the data directory can be
    removed like any other directory."""
    path = os.path.realpath(parent)
    entries = _mountinfo()
    if any(_is_within(e.mount_point, path) and e.mount_point != path for e in entries):
        return
    if [e for e in entries if e.mount_point == path]:
        _run(["umount", path], QUICK_TIMEOUT, "unmount")


# --- mount table and loop devices -------------------------------------------------------------


@dataclass(frozen=True)
class _Mount:
    device: str
    """``major:minor`` of the mounted device."""
    mount_point: str
    shared: bool


_ESCAPE = re.compile(r"\\([0-7]{3})")


def _mountinfo() -> list[_Mount]:
    """This process's mount table, in mount order (the last entry for a path is on top)."""
    mounts = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split(" ")
        separator = fields.index("-")
        point = _ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), fields[4])
        shared = any(tag.startswith("shared:") for tag in fields[6:separator])
        mounts.append(_Mount(fields[2], point, shared))
    return mounts


def _mount_entries(target: Path) -> list[_Mount]:
    path = os.path.realpath(target)
    return [entry for entry in _mountinfo() if entry.mount_point == path]


def _mounted_device(root: Path) -> str | None:
    """The loop device (``/dev/loopN``) when the top mount on the mount point is our image."""
    entries = _mount_entries(mount_point(root))
    if not entries:
        return None
    sysfs = Path("/sys/dev/block") / entries[-1].device
    try:
        backing = (sysfs / "loop" / "backing_file").read_text().rstrip("\n")
    except OSError:
        return None  # not a loop device
    if backing != os.path.realpath(image_path(root)):
        return None
    return f"/dev/{sysfs.resolve().name}"


def _loop_devices(image: Path) -> list[str]:
    """The loop devices attached to ``image``."""
    path = os.path.realpath(image)
    found = []
    for backing in Path("/sys/block").glob("loop*/loop/backing_file"):
        with contextlib.suppress(OSError):
            if backing.read_text().rstrip("\n") == path:
                found.append(f"/dev/{backing.parent.parent.name}")
    return found


def _is_within(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory.rstrip("/") + "/")


# --- helpers ----------------------------------------------------------------------------------


def _mount_point_dir(root: Path) -> Path:
    target = mount_point(root)
    if target.is_symlink():
        log.error("%s is a symbolic link", target)
        raise VolumeError("the volume's mount point is not a directory")
    target.mkdir(mode=0o700, exist_ok=True)  # root-owned: unwritable to the instance unmounted
    return target


def _keep_private(root: Path) -> None:
    info = root.lstat()
    if info.st_uid != os.geteuid() or info.st_mode & 0o077:
        os.chown(root, os.geteuid(), os.getegid())
        root.chmod(0o700)


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    try:
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    except FileNotFoundError:
        raise VolumeError("the instance's volume is missing") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _which(tool: str) -> str | None:
    return shutil.which(tool, path=os.pathsep.join([os.environ.get("PATH", ""), _TOOL_PATH]))


def _run(argv: list[str], timeout: float, action: str) -> subprocess.CompletedProcess[str]:
    """Run a tool (found on the sbin-inclusive path), capturing its output."""
    try:
        return subprocess.run(
            [_which(argv[0]) or argv[0], *argv[1:]],
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout,
            check=False,
            env={"PATH": _TOOL_PATH, "LC_ALL": "C"},
        )
    except subprocess.TimeoutExpired:
        log.error("%s timed out after %s s", " ".join(argv), timeout)
        raise VolumeError(f"could not {action} the volume: {argv[0]} timed out") from None
    except OSError as exc:
        log.error("%s could not run: %s", " ".join(argv), exc)
        raise VolumeError(f"could not {action} the volume: {argv[0]} is missing") from None


def _check(argv: list[str], action: str, timeout: float = QUICK_TIMEOUT) -> None:
    """Run a tool; on failure log everything and raise a message without host paths."""
    result = _run(argv, timeout, action)
    if result.returncode != 0:
        log.error("%s exited %d: %s", " ".join(argv), result.returncode, _output(result))
        raise VolumeError(f"could not {action} the volume: {argv[0]} failed")


def _output(result: subprocess.CompletedProcess[str]) -> str:
    return " ".join((result.stderr + result.stdout).split())[:500]
