"""The guest's file confinement (``guest/files.py``): every way out of the volume is refused,
links inside it work, writes are atomic and never keep set-id bits."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from gentity.guest.files import CONFLICT, INVALID, MISSING, FileRefused, Volume


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    (home / "work").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret").write_text("secret")
    return home


@pytest.fixture
def volume(home: Path) -> Volume:
    return Volume(str(home), str(home / "work"))


def read(volume: Volume, path: str) -> bytes:
    place, st = volume.stat(path)
    with place:
        assert stat.S_ISREG(st.st_mode)
        fd, size = volume.open_read(place)
    try:
        return os.read(fd, size + 1)
    finally:
        os.close(fd)


def write(volume: Volume, path: str, data: bytes) -> tuple[str, bool]:
    upload = volume.open_write(path)
    upload.write(data)
    upload.commit()
    return upload.path, not upload.existed


def refused(code: str, call: object, *args: object, **kwargs: object) -> str:
    assert callable(call)
    with pytest.raises(FileRefused) as caught:
        call(*args, **kwargs)
    assert caught.value.code == code, caught.value.message
    return caught.value.message


def test_relative_paths_start_in_the_workdir_and_parents_are_made(
    volume: Volume, home: Path
) -> None:
    path, created = write(volume, "a/b/c.bin", bytes(range(256)))
    assert path == f"{home}/work/a/b/c.bin" and created
    assert (home / "work/a/b/c.bin").read_bytes() == bytes(range(256))
    assert read(volume, f"{home}/work/a/b/c.bin") == bytes(range(256))
    assert stat.S_IMODE((home / "work/a/b/c.bin").stat().st_mode) == 0o644
    assert stat.S_IMODE((home / "work/a").stat().st_mode) == 0o755
    _, created = write(volume, "a/b/c.bin", b"again")
    assert not created and read(volume, "a/b/c.bin") == b"again"
    assert [n for n in os.listdir(home / "work/a/b")] == ["c.bin"]  # no temporary left


def test_dot_dot_and_absolute_paths_outside_are_refused(volume: Volume, home: Path) -> None:
    assert "'..'" in refused(INVALID, volume.stat, "../../outside/secret")
    assert "'..'" in refused(INVALID, volume.stat, "a/../b")
    assert "outside" in refused(INVALID, volume.stat, "/etc/passwd")
    assert "outside" in refused(INVALID, volume.open_write, "/etc/evil")
    assert "outside" in refused(INVALID, volume.stat, f"{home}-other/x")
    refused(INVALID, volume.stat, "")
    refused(INVALID, volume.stat, "a\0b")
    refused(MISSING, volume.stat, "nothing-here")
    assert not (home.parent / "outside" / "evil").exists()


@pytest.mark.parametrize("target", ["/etc", "../../outside", "/", "..", "../.."])
def test_links_that_lead_out_are_refused_every_way(volume: Volume, home: Path, target: str) -> None:
    (home / "work" / "link").symlink_to(target)
    if target == "..":  # the home itself: inside, fine
        place, st = volume.stat("link")
        place.close()
        assert stat.S_ISDIR(st.st_mode)
        return
    assert "leads out" in refused(INVALID, volume.stat, "link")
    assert "leads out" in refused(INVALID, volume.stat, "link/passwd")
    assert "leads out" in refused(INVALID, volume.open_write, "link/evil")
    assert "leads out" in refused(INVALID, volume.delete, "link/passwd", recursive=True)


def test_a_linked_parent_directory_cannot_lead_out(volume: Volume, home: Path) -> None:
    (home / "work" / "deep").mkdir()
    (home / "work" / "deep" / "up").symlink_to("../../..")  # home/work/deep -> tmp_path
    assert "leads out" in refused(INVALID, volume.stat, "deep/up/outside/secret")
    assert "leads out" in refused(INVALID, volume.open_write, "deep/up/outside/new")
    assert not (home.parent / "outside" / "new").exists()


def test_links_inside_the_volume_are_followed(volume: Volume, home: Path) -> None:
    write(volume, "real/file.txt", b"hello")
    (home / "work" / "rel").symlink_to("real")
    (home / "work" / "abs").symlink_to(home / "work" / "real" / "file.txt")
    (home / "work" / "loop").symlink_to("loop")
    assert read(volume, "rel/file.txt") == b"hello"
    assert read(volume, "abs") == b"hello"
    assert "symbolic links" in refused(INVALID, volume.stat, "loop")
    # Writing to a link replaces the link, never what it points to.
    write(volume, "abs", b"new")
    assert (home / "work" / "real" / "file.txt").read_bytes() == b"hello"
    assert not (home / "work" / "abs").is_symlink()


def test_listing_names_each_kind(volume: Volume, home: Path) -> None:
    write(volume, "d/f", b"12345")
    (home / "work" / "d" / "sub").mkdir()
    (home / "work" / "d" / "ln").symlink_to("/etc/passwd")
    os.mkfifo(home / "work" / "d" / "fifo")
    place, _ = volume.stat("d")
    with place:
        listing = volume.list(place)
    kinds = {e["name"]: (e["type"], e["size"]) for e in listing["entries"]}
    assert kinds["f"] == ("file", 5) and kinds["sub"][0] == "directory"
    assert kinds["ln"][0] == "symlink" and kinds["fifo"][0] == "other"
    assert [e["name"] for e in listing["entries"]] == ["f", "fifo", "ln", "sub"]
    assert listing["entries"][0]["modifiedAt"].endswith("Z")
    place, _ = volume.stat("d/fifo")
    with place:
        refused(INVALID, volume.open_read, place)  # never blocks on a FIFO


def test_delete(volume: Volume, home: Path) -> None:
    write(volume, "t/a/b", b"x")
    (home / "work" / "t" / "ln").symlink_to(home.parent / "outside")
    assert volume.delete("t/ln", recursive=True) == "symlink"  # the link, not its target
    assert (home.parent / "outside" / "secret").exists()
    assert "not empty" in refused(CONFLICT, volume.delete, "t", recursive=False)
    assert volume.delete("t/a/b", recursive=False) == "file"
    assert volume.delete("t", recursive=True) == "directory"
    assert not (home / "work" / "t").exists()
    refused(MISSING, volume.delete, "t", recursive=False)
    refused(INVALID, volume.delete, str(home), recursive=True)


def test_an_abandoned_upload_changes_nothing(volume: Volume, home: Path) -> None:
    write(volume, "keep", b"old")
    upload = volume.open_write("keep")
    upload.write(b"half")
    upload.abort()
    assert read(volume, "keep") == b"old"
    assert os.listdir(home / "work") == ["keep"]


def test_set_id_bits_never_survive_a_write(volume: Volume, home: Path) -> None:
    target = home / "work" / "tool"
    target.write_bytes(b"#!/bin/sh\n")
    target.chmod(0o6777)
    write(volume, "tool", b"#!/bin/sh\necho new\n")
    assert stat.S_IMODE(target.stat().st_mode) == 0o755
    (home / "work" / "dir").mkdir()
    assert "is a directory" in refused(CONFLICT, volume.open_write, "dir")


def test_a_root_guest_gives_new_directories_to_the_owner_by_descriptor(
    volume: Volume, home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The guest runs as root on some providers' machines (and here, as the server does).
    assert os.geteuid() == 0, "run as root, as CI does"
    os.chown(home, 4242, 4242)
    os.chown(home / "work", 4242, 4242)
    write(volume, "a/b/f.txt", b"x")
    for made in (home / "work/a", home / "work/a/b"):
        assert (made.stat().st_uid, made.stat().st_gid) == (4242, 4242)

    # The instance swaps something else in for the directory just made, before it is given
    # away: nothing but the directory the guest made and opened is ever given away.
    victim = tmp_path / "victim"
    victim.mkdir()
    theirs = home / "work/theirs"  # another user's directory, somewhere in the volume
    theirs.mkdir()
    os.chown(theirs, 777, 777)
    roots = home / "work/roots"  # and one of root's, with something in it
    (roots / "inside").mkdir(parents=True)
    real_mkdir = os.mkdir

    def swapped_for(thing: Path) -> object:
        def mkdir(name: str, mode: int = 0o777, *, dir_fd: int | None = None) -> None:
            real_mkdir(name, mode, dir_fd=dir_fd)
            os.rmdir(name, dir_fd=dir_fd)
            if thing == victim:
                os.symlink(str(thing), name, dir_fd=dir_fd)
            else:
                os.rename(thing, name, dst_dir_fd=dir_fd)

        return mkdir

    monkeypatch.setattr(os, "mkdir", swapped_for(victim))
    refused(INVALID, write, volume, "c/f.txt", b"x")
    assert victim.stat().st_uid == 0 and list(victim.iterdir()) == []
    assert os.lstat(home / "work/c").st_uid == 0  # the link is left as it is too
    monkeypatch.setattr(os, "mkdir", swapped_for(theirs))
    write(volume, "d/f.txt", b"x")
    monkeypatch.undo()
    assert (home / "work/d").stat().st_uid == 777
    monkeypatch.setattr(os, "mkdir", swapped_for(roots))
    write(volume, "e/f.txt", b"x")
    monkeypatch.undo()
    assert (home / "work/e").stat().st_uid == 0
