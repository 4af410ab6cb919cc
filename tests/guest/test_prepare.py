"""Preparing an instance before its agent starts: the working directory, seeded files written
only where absent, a repository cloned with progress in the log, and what a failure says.
Directly, then through a real guest daemon."""

from __future__ import annotations

import asyncio
import json
import os
import re
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest

from gentity.guest import client
from gentity.guest.client import GuestError
from gentity.guest.logreader import tail
from gentity.guest.logwriter import LogWriter
from gentity.guest.prepare import MARKER, _Progress, prepare
from gentity.guest.seeds import PreparePlan, SeedFile
from tests.guest.conftest import GuestFactory

pytestmark = pytest.mark.anyio

SETTINGS = SeedFile(".tool/settings.json", {"model": "{model}", "trusted": ["{workdir}"]}, True)
RC = SeedFile(".toolrc", "model: {provider}/{model}\nhome: {home}\n", False)
VALUES = {"model": "m-1", "provider": "acme", "api_key_suffix": ""}


def _wait_in_thread(process: subprocess.Popen[bytes]) -> asyncio.Future[int]:
    return asyncio.get_running_loop().run_in_executor(None, process.wait)


def _messages(path: Path) -> list[str]:
    return [r["message"] for r in tail(path, 200)]


def make_repo(where: Path) -> Path:
    """A bare repository with one commit holding ``README.md``."""
    work = where / "src"
    work.mkdir(parents=True)
    git = ["git", "-c", "user.email=t@example.com", "-c", "user.name=t"]
    (work / "README.md").write_text("hello from the repo\n")
    subprocess.run([*git, "init", "-q", "-b", "main"], cwd=work, check=True)
    subprocess.run([*git, "add", "README.md"], cwd=work, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "first"], cwd=work, check=True)
    bare = where / "repo.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(bare)], check=True)
    return bare


async def _prepare(plan: PreparePlan, home: Path, log: Path) -> str | None:
    with LogWriter(log) as writer:
        return await prepare(
            plan,
            home=str(home),
            workdir=str(home / "work"),
            env={"PATH": os.defpath, "HOME": str(home)},
            log=writer,
            wait_exit=_wait_in_thread,
        )


async def test_seeds_are_rendered_and_written_0600_with_the_workdir(tmp_path: Path) -> None:
    home = tmp_path / "home"
    plan = PreparePlan(files=[SETTINGS, RC], values=VALUES)
    assert await _prepare(plan, home, tmp_path / "a.log") is None
    assert (home / "work").is_dir()
    settings = home / ".tool" / "settings.json"
    assert json.loads(settings.read_text()) == {"model": "m-1", "trusted": [str(home / "work")]}
    assert (home / ".toolrc").read_text() == f"model: acme/m-1\nhome: {home}\n"
    for path in (settings, home / ".toolrc"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((home / ".tool").stat().st_mode) == 0o700
    assert _messages(tmp_path / "a.log") == [
        "prepare: wrote ~/.tool/settings.json",
        "prepare: wrote ~/.toolrc",
    ]


async def test_a_users_file_and_a_symlink_are_kept(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / ".tool").mkdir(parents=True)
    (home / ".tool" / "settings.json").write_text("my edits\n")
    (home / ".toolrc").symlink_to(tmp_path / "elsewhere")  # dangling: not followed either
    plan = PreparePlan(files=[SETTINGS, RC], values=VALUES)
    assert await _prepare(plan, home, tmp_path / "a.log") is None
    assert (home / ".tool" / "settings.json").read_text() == "my edits\n"
    assert not (tmp_path / "elsewhere").exists()
    assert _messages(tmp_path / "a.log") == [
        "prepare: kept ~/.tool/settings.json",
        "prepare: kept ~/.toolrc",
    ]


async def test_after_the_first_start_only_the_workdir_is_made(tmp_path: Path) -> None:
    home = tmp_path / "home"
    plan = PreparePlan(files=[RC], values=VALUES)
    assert await _prepare(plan, home, tmp_path / "a.log") is None
    assert (home / MARKER).exists()
    (home / ".toolrc").unlink()  # the user removed it on purpose
    (home / "work").rmdir()
    assert await _prepare(plan, home, tmp_path / "b.log") is None
    assert not (home / ".toolrc").exists()
    assert (home / "work").is_dir()
    assert _messages(tmp_path / "b.log") == []


async def test_a_repository_is_cloned_into_the_workdir_with_progress(tmp_path: Path) -> None:
    bare = make_repo(tmp_path / "origin")
    home = tmp_path / "home"
    url = f"file://{bare}"
    assert await _prepare(PreparePlan(repo=url), home, tmp_path / "a.log") is None
    assert (home / "work" / "README.md").read_text() == "hello from the repo\n"
    messages = _messages(tmp_path / "a.log")
    assert messages[0] == f"prepare: cloning {url} into {home / 'work'}"
    assert any(m.startswith("prepare: git: Cloning into") for m in messages)
    assert any(
        re.fullmatch(r"prepare: git: Receiving objects: 100% \(3/3\).*done\.", m) for m in messages
    )
    assert messages[-1] == f"prepare: cloned {url}"


def test_progress_is_logged_every_tenth_percent_of_each_phase() -> None:
    progress = _Progress()
    receiving = [f"Receiving objects: {n:3}% ({n}/100)" for n in range(101)]
    lines = [*receiving, "Receiving objects: 100% (100/100), 2 MiB | 1 MiB/s, done."]
    lines += ["Resolving deltas:   0% (0/4)", "Resolving deltas: 100% (4/4), done."]
    kept = [line for line in lines if progress.worth_logging(line)]
    assert kept == [*receiving[::10], lines[101], *lines[102:]]
    assert progress.worth_logging("Cloning into 'work'...")


async def test_a_non_empty_workdir_is_not_cloned_into(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / "work").mkdir(parents=True)
    (home / "work" / "mine.txt").write_text("mine\n")
    url = f"file://{tmp_path / 'missing.git'}"
    assert await _prepare(PreparePlan(repo=url), home, tmp_path / "a.log") is None
    assert os.listdir(home / "work") == ["mine.txt"]
    assert _messages(tmp_path / "a.log") == [
        f"prepare: {home / 'work'} is not empty; {url} is not cloned"
    ]


async def test_an_empty_workdir_is_made_a_git_repository_once(tmp_path: Path) -> None:
    home = tmp_path / "home"
    work = home / "work"
    assert await _prepare(PreparePlan(git_init=True), home, tmp_path / "a.log") is None
    top = ["git", "-C", str(work), "rev-parse", "--show-toplevel"]
    branch = ["git", "-C", str(work), "symbolic-ref", "HEAD"]
    found = [subprocess.run(c, capture_output=True, text=True, check=True) for c in (top, branch)]
    assert [f.stdout.strip() for f in found] == [str(work), "refs/heads/main"]
    assert _messages(tmp_path / "a.log") == [f"prepare: made {work} a git repository"]
    # Later starts leave it alone, even when the user removed it.
    subprocess.run(["rm", "-rf", str(work / ".git")], check=True)
    assert await _prepare(PreparePlan(git_init=True), home, tmp_path / "b.log") is None
    assert not (work / ".git").exists()


async def test_a_repository_or_a_non_empty_workdir_is_not_made_a_new_one(tmp_path: Path) -> None:
    bare = make_repo(tmp_path / "origin")
    home = tmp_path / "home"
    plan = PreparePlan(repo=f"file://{bare}", git_init=True)
    assert await _prepare(plan, home, tmp_path / "a.log") is None
    remote = subprocess.run(
        ["git", "-C", str(home / "work"), "remote", "get-url", "origin"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert remote.stdout.strip() == f"file://{bare}"
    assert not any("a git repository" in m for m in _messages(tmp_path / "a.log"))

    other = tmp_path / "other"
    (other / "work").mkdir(parents=True)
    (other / "work" / "mine.txt").write_text("mine\n")
    assert await _prepare(PreparePlan(git_init=True), other, tmp_path / "b.log") is None
    assert os.listdir(other / "work") == ["mine.txt"]
    assert _messages(tmp_path / "b.log") == [
        f"prepare: {other / 'work'} is not empty; no git repository is made"
    ]


async def test_without_git_the_agent_still_starts(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with LogWriter(tmp_path / "a.log") as writer:
        error = await prepare(
            PreparePlan(git_init=True),
            home=str(home),
            workdir=str(home / "work"),
            env={"PATH": str(tmp_path / "no-bin"), "HOME": str(home)},
            log=writer,
            wait_exit=_wait_in_thread,
        )
    assert error is None
    assert (home / MARKER).exists()
    records = tail(tmp_path / "a.log", 10)
    assert [(r["level"], r["message"]) for r in records] == [
        ("warn", "prepare: git is not installed; no git repository is made")
    ]


async def test_a_failed_clone_is_an_error_and_is_tried_again_next_start(tmp_path: Path) -> None:
    home = tmp_path / "home"
    url = f"file://{tmp_path / 'origin' / 'repo.git'}"
    error = await _prepare(PreparePlan(repo=url), home, tmp_path / "a.log")
    assert error is not None
    assert error.startswith(f"cloning {url} failed (git exited with code 128): fatal: ")
    assert "does not appear to be a git repository" in error
    assert not (home / MARKER).exists()
    make_repo(tmp_path / "origin")
    assert await _prepare(PreparePlan(repo=url), home, tmp_path / "b.log") is None
    assert (home / "work" / "README.md").exists()


async def test_the_guest_prepares_before_the_agent_starts_in_the_workdir(
    guest_factory: GuestFactory, tmp_path: Path
) -> None:
    bare = make_repo(tmp_path / "origin")
    home = tmp_path / "agent-home"
    prepare_config: dict[str, Any] = {
        **PreparePlan(files=[RC], values=VALUES, repo=f"file://{bare}").to_json()
    }
    guest = guest_factory(
        workdir=str(home / "work"),
        env={"PS1": "$ ", "TERM": "xterm-256color", "HOME": str(home)},
        prepare=prepare_config,
    )
    await guest.wait_for(lambda h: h["state"] == "running")
    term = await guest.attach()
    await term.send("pwd; cat README.md; cat ~/.toolrc\r")
    await term.expect(str(home / "work"))
    await term.expect("hello from the repo")
    await term.expect("model: acme/m-1")
    await term.close()
    log = guest.log_text()
    assert (
        log.index("prepare: wrote ~/.toolrc")
        < log.index("prepare: cloned")
        < log.index("agent started")
    )


async def test_a_guest_whose_clone_fails_reports_the_agent_crashed(
    guest_factory: GuestFactory, tmp_path: Path
) -> None:
    url = f"file://{tmp_path / 'nothing.git'}"
    guest = guest_factory(workdir=str(tmp_path / "home" / "work"), prepare={"repo": url})
    health = await guest.wait_for(lambda h: h["state"] == "error")
    assert health["error"].startswith(f"cloning {url} failed")
    assert health["agent"]["state"] == "crashed"
    assert health["agentPid"] is None


async def test_a_bad_prepare_object_is_refused_naming_the_field(
    guest_factory: GuestFactory,
) -> None:
    guest = guest_factory(configure=False)
    bad = {**guest.agent_config, "prepare": {"repo": "ssh://host/x.git"}}
    with pytest.raises(GuestError, match=r"invalid config: repo must be an https:// or file://"):
        await client.configure(guest.address, guest.secret, bad)
    bad = {**guest.agent_config, "prepare": {"gitInit": "yes"}}
    with pytest.raises(GuestError, match=r"invalid config: prepare.gitInit must be true or false"):
        await client.configure(guest.address, guest.secret, bad)
