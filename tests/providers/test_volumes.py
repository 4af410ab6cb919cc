"""Size-limited instance volumes: real loop devices, real ext4, real ENOSPC.

These need root and loop devices. Without them they skip, except under CI, where they fail.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gentity.providers.compute.local import volumes
from tests.conftest import require

UID = GID = 1_000_123
GiB = 2**30


@pytest.fixture
def instances(tmp_path: Path) -> Iterator[Path]:
    """An instances directory; every mount and loop device under it goes away afterwards."""
    reason = volumes.quota_support()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"loop-mounted volumes are required under CI: {reason}")
        pytest.skip(f"loop-mounted volumes do not work here: {reason}")
    directory = tmp_path / "instances"
    directory.mkdir()
    try:
        yield directory
    finally:
        _clean_up(tmp_path)


def _clean_up(top: Path) -> None:
    for _ in range(20):
        points = [p for p in _mount_points() if p == str(top) or p.startswith(f"{top}/")]
        if not points:
            break
        for point in sorted(points, key=len, reverse=True):
            if subprocess.run(["umount", point], capture_output=True).returncode:
                subprocess.run(["umount", "-l", point], capture_output=True)
    for device, backing in _loops():
        if backing.startswith(f"{top}/"):
            subprocess.run(["losetup", "--detach", device], capture_output=True)


def _mountinfo() -> list[list[str]]:
    return [line.split(" ") for line in Path("/proc/self/mountinfo").read_text().splitlines()]


def _unescape(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def _mount_points() -> list[str]:
    return [_unescape(fields[4]) for fields in _mountinfo()]


def _mounts_on(path: Path) -> list[list[str]]:
    return [fields for fields in _mountinfo() if _unescape(fields[4]) == str(path)]


def _loops() -> list[tuple[str, str]]:
    found = []
    for backing in Path("/sys/block").glob("loop*/loop/backing_file"):
        try:
            found.append((f"/dev/{backing.parent.parent.name}", backing.read_text().strip()))
        except OSError:
            continue
    return found


def _loops_of(image: Path) -> list[str]:
    by_sysfs = [device for device, backing in _loops() if backing == str(image)]
    by_losetup = subprocess.run(
        ["losetup", "--noheadings", "-O", "NAME", "-j", str(image)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert sorted(by_sysfs) == sorted(by_losetup)
    return by_sysfs


def _as_instance(*argv: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    setpriv = ["setpriv", f"--reuid={UID}", f"--regid={GID}", "--clear-groups"]
    return subprocess.run([*setpriv, *argv], capture_output=True, text=True, cwd=cwd, timeout=60)


def _allocated(path: Path) -> int:
    return path.stat().st_blocks * 512


def test_a_new_volume_is_mounted_safely_and_owned_by_the_instance(instances: Path) -> None:
    root = instances / "i-1"
    assert volumes.create(root, 1, UID, GID) is None
    target, image = volumes.mount_point(root), volumes.image_path(root)

    [mount] = _mounts_on(target)
    options = set(mount[5].split(","))
    assert {"nosuid", "nodev", "noatime"} <= options
    assert "noexec" not in options  # agents run what they build
    assert mount[mount.index("-") + 1] == "ext4"
    device = mount[mount.index("-") + 2]
    assert _loops_of(image) == [device]
    assert (Path("/sys/block") / Path(device).name / "loop/autoclear").read_text().strip() == "1"
    assert volumes.is_mounted(root) and volumes.is_limited(root)

    home = target.stat()
    assert (home.st_uid, home.st_gid) == (UID, GID)
    assert stat.S_IMODE(home.st_mode) == 0o755
    assert list(target.iterdir()) == []  # no lost+found in the agent's home
    # The image is out of the instance's reach, and is not a reservation on the host disk.
    assert stat.S_IMODE(root.stat().st_mode) == 0o700 and root.stat().st_uid == 0
    assert stat.S_IMODE(image.stat().st_mode) == 0o600
    assert image.stat().st_size == GiB
    assert _allocated(image) < 64 * 2**20
    used, size = volumes.usage(root)
    assert 0.9 * GiB < size <= GiB and used < 64 * 2**20


def test_a_full_volume_says_enospc_and_spares_the_host_disk(instances: Path) -> None:
    root = instances / "i-full"
    volumes.create(root, 1, UID, GID)
    target, image = volumes.mount_point(root), volumes.image_path(root)

    # The instance's uid cannot reach the volume through its host path (root is 0700): it
    # works in it from the inside, as in its sandbox.
    result = _as_instance("fallocate", "-l", "1200M", "big", cwd=target)
    assert result.returncode != 0
    assert "No space left on device" in result.stderr
    result = _as_instance("dd", "if=/dev/zero", "of=big", "bs=1M", "count=1200", cwd=target)
    assert result.returncode != 0
    assert "No space left on device" in result.stderr
    assert (target / "big").stat().st_uid == UID
    subprocess.run(["sync", "-f", str(target)], check=True)
    assert (target / "big").stat().st_size > 0.8 * GiB
    assert _allocated(image) <= GiB + 16 * 2**20

    # Deleted files give their space back to the host (mounted with discard).
    (target / "big").unlink()
    deadline = time.monotonic() + 15
    while _allocated(image) > 256 * 2**20 and time.monotonic() < deadline:
        subprocess.run(["sync", "-f", str(target)], check=True)
        time.sleep(0.2)
    assert _allocated(image) <= 256 * 2**20


def test_data_survives_unmount_and_mount_again(instances: Path) -> None:
    root = instances / "i-2"
    volumes.create(root, 1, UID, GID)
    target, image = volumes.mount_point(root), volumes.image_path(root)
    assert _as_instance("sh", "-c", "echo kept > notes", cwd=target).returncode == 0
    assert _as_instance("touch", str(target / "outside")).returncode != 0

    volumes.unmount(root)
    volumes.unmount(root)
    assert not _mounts_on(target) and not volumes.is_mounted(root)
    assert _loops_of(image) == []
    # Unmounted, the mount point is an empty directory the instance's uid cannot write to.
    assert list(target.iterdir()) == []
    assert target.stat().st_uid == 0 and stat.S_IMODE(target.stat().st_mode) == 0o700

    assert volumes.ensure_mounted(root) is None
    assert volumes.ensure_mounted(root) is None
    assert len(_mounts_on(target)) == 1
    assert (target / "notes").read_text() == "kept\n"
    assert len(_loops_of(image)) == 1


def test_create_again_keeps_the_data_and_mounts_once(instances: Path) -> None:
    root = instances / "i-3"
    volumes.create(root, 1, UID, GID)
    (volumes.mount_point(root) / "file").write_text("x")
    assert volumes.create(root, 1, UID, GID) is None
    volumes.unmount(root)
    assert volumes.create(root, 1, UID, GID) is None  # mounts the existing image
    assert len(_mounts_on(volumes.mount_point(root))) == 1
    assert (volumes.mount_point(root) / "file").read_text() == "x"


def test_a_volume_is_found_after_its_mount_went_away_behind_our_back(instances: Path) -> None:
    """As after a reboot, or a loop device left attached by hand: no second loop device."""
    root = instances / "i-4"
    volumes.create(root, 1, UID, GID)
    target, image = volumes.mount_point(root), volumes.image_path(root)
    subprocess.run(["umount", str(target)], check=True)
    assert not volumes.is_mounted(root)
    subprocess.run(["losetup", "--find", str(image)], check=True)  # not autoclear

    volumes.ensure_mounted(root)
    assert len(_loops_of(image)) == 1
    assert len(_mounts_on(target)) == 1
    volumes.unmount(root)
    assert _loops_of(image) == []


def test_destroy_leaves_nothing_and_can_be_repeated(instances: Path) -> None:
    root = instances / "i-5"
    volumes.create(root, 1, UID, GID)
    image = volumes.image_path(root)
    (volumes.mount_point(root) / "file").write_text("x")

    volumes.destroy(root)
    assert not image.exists() and not volumes.mount_point(root).exists()
    assert _loops_of(image) == []
    assert not any(p.startswith(str(root)) for p in _mount_points())
    volumes.destroy(root)
    root.rmdir()
    volumes.destroy(root)
    volumes.unmount(root)


def test_unmount_waits_for_users_and_never_detaches_lazily(instances: Path) -> None:
    root = instances / "i-6"
    volumes.create(root, 1, UID, GID)
    target = volumes.mount_point(root)
    sleeper = subprocess.Popen(["sleep", "60"], cwd=target)
    try:
        started = time.monotonic()
        with pytest.raises(volumes.VolumeError, match="still in use") as caught:
            volumes.unmount(root, timeout=0.5)
        assert time.monotonic() - started >= 0.5
        assert str(instances) not in str(caught.value)
        assert volumes.is_mounted(root)
        threading.Timer(0.3, sleeper.send_signal, [signal.SIGKILL]).start()
        volumes.unmount(root, timeout=10)
        assert not volumes.is_mounted(root)
    finally:
        sleeper.kill()
        sleeper.wait()


@pytest.mark.parametrize("online", [True, False], ids=["online", "offline"])
def test_resize_grows_and_refuses_to_shrink(instances: Path, online: bool) -> None:
    if online and not volumes.can_grow_online():
        pytest.skip("online ext4 resizing needs CAP_SYS_RESOURCE, which this root lacks")
    root = instances / "i-7"
    volumes.create(root, 1, UID, GID)
    (volumes.mount_point(root) / "file").write_text("x")
    if not online:
        volumes.unmount(root)
    volumes.resize(root, 2)
    assert volumes.is_mounted(root) is online
    volumes.ensure_mounted(root)
    _, size = volumes.usage(root)
    assert 1.9 * GiB < size <= 2 * GiB
    assert (volumes.mount_point(root) / "file").read_text() == "x"
    volumes.resize(root, 2)
    with pytest.raises(volumes.VolumeError, match="not shrink"):
        volumes.resize(root, 1)
    with pytest.raises(volumes.VolumeError, match="between"):
        volumes.create(instances / "i-8", 0, UID, GID)


def test_errors_say_what_failed_without_host_paths(instances: Path) -> None:
    root = instances / "i-9"
    volumes.mount_point(root).mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(volumes.mount_point(root))], check=True)
    with pytest.raises(volumes.VolumeError) as caught:
        volumes.create(root, 1, UID, GID)
    assert str(caught.value) == "could not create the volume: its mount point is in use"
    with pytest.raises(volumes.VolumeError, match="missing"):
        volumes.ensure_mounted(instances / "nope")


def test_servers_with_different_long_data_dirs_keep_their_own_volumes(
    instances: Path,
) -> None:
    deep = instances / ("d" * 200) / ("e" * 200) / "with space"
    first, second = deep / "server-1" / "instances", deep / "server-2" / "instances"
    roots = [first / "i-a", second / "i-a"]
    for n, root in enumerate(roots):
        volumes.create(root, 1, UID + n, GID + n)
    for n, root in enumerate(roots):
        assert volumes.is_mounted(root)
        assert volumes.mount_point(root).stat().st_uid == UID + n
        assert len(_loops_of(volumes.image_path(root))) == 1
    volumes.destroy(roots[0])
    assert not volumes.is_mounted(roots[0]) and volumes.is_mounted(roots[1])
    volumes.destroy(roots[1])
    assert not any(_loops_of(volumes.image_path(root)) for root in roots)


def test_concurrent_creates_each_get_their_own_volume(instances: Path) -> None:
    roots = [instances / f"i-c{n}" for n in range(4)]
    errors: list[BaseException] = []

    def make(root: Path) -> None:
        try:
            volumes.create(root, 1, UID, GID)
            volumes.create(root, 1, UID, GID)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=make, args=(root,)) for root in [*roots, *roots]]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    devices = [_loops_of(volumes.image_path(root)) for root in roots]
    assert all(len(d) == 1 for d in devices) and len({d[0] for d in devices}) == len(roots)
    assert all(len(_mounts_on(volumes.mount_point(root))) == 1 for root in roots)
    assert len(_mounts_on(instances)) == 1  # one shared bind of the parent, not one per racer


def test_unmounting_also_unmounts_the_copies_in_running_sandboxes(instances: Path) -> None:
    """Every sandbox gets a (hidden) copy of the mounts present when it starts; without
    propagation those copies would keep a destroyed volume's loop device and space forever."""
    require(shutil.which("bwrap") is not None, "bwrap (the sandbox) is not installed")
    a, b = instances / "i-a", instances / "i-b"
    volumes.create(a, 1, UID, GID)
    volumes.create(b, 1, UID + 1, GID + 1)
    sandbox = subprocess.Popen(
        [
            *["bwrap", "--die-with-parent", "--unshare-pid", "--unshare-user"],
            *["--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"],
            *["--tmpfs", str(instances), "--bind", str(volumes.mount_point(b)), "/mnt"],
            *["sleep", "60"],
        ]
    )
    try:
        deadline = time.monotonic() + 10
        while not _sandbox_sees(sandbox.pid, volumes.image_path(a)):
            assert time.monotonic() < deadline, "the sandbox did not start"
            time.sleep(0.02)
        volumes.unmount(a)  # stop: without propagation, the copy would keep the fs mounted
        assert _loops_of(volumes.image_path(a)) == []
        assert not _sandbox_sees(sandbox.pid, volumes.image_path(a))
        assert _sandbox_sees(sandbox.pid, volumes.image_path(b))
        volumes.destroy(a)
    finally:
        sandbox.kill()
        sandbox.wait()


def _sandbox_sees(bwrap_pid: int, image: Path) -> bool:
    """Whether a process of the sandbox has a copy of the mount of ``image``'s volume."""
    devices = _loops_of(image)
    if not devices:
        return False
    major_minor = f" 7:{Path(devices[0]).name.removeprefix('loop')} "
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if ppid == bwrap_pid and major_minor in (proc / "mountinfo").read_text():
                return True
        except (OSError, IndexError, ValueError):
            continue
    return False


def test_without_loop_support_the_volume_is_a_plain_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    require(os.geteuid() == 0, "chowning to the instance's uid needs root")
    monkeypatch.setattr(volumes, "quota_support", lambda: "no loop devices here")
    root = tmp_path / "instances" / "i-p"
    reason = volumes.create(root, 1, UID, GID)
    assert reason == "the volume's size is not enforced: no loop devices here"
    target = volumes.mount_point(root)
    assert (target.stat().st_uid, target.stat().st_gid) == (UID, GID)
    assert not volumes.is_limited(root) and not volumes.is_mounted(root)
    assert volumes.ensure_mounted(root) is not None
    (target / "file").write_text("x")
    volumes.unmount(root)
    assert (target / "file").exists()
    volumes.resize(root, 5)  # nothing to resize
    volumes.destroy(root)
    assert not target.exists()
