"""Reattaching to a real session: the replay answers nothing, full-screen programs redraw.

Screens are compared through pyte, a terminal emulator (test-only dependency).
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pyte
import pytest

from .conftest import GuestFactory, GuestProc, Term
from .test_replay import QUERIES

pytestmark = pytest.mark.anyio


class Screen(pyte.Screen):
    def select_graphic_rendition(self, *attrs: int, private: bool = False) -> None:
        if not private:  # pyte fails on XTMODKEYS (CSI > 4;2 m), which vim sends
            super().select_graphic_rendition(*attrs)


def render(data: bytes, cols: int, rows: int) -> list[str]:
    screen = Screen(cols, rows)
    pyte.ByteStream(screen).feed(data)
    return [line.rstrip() for line in screen.display]


async def drain(term: Term, quiet: float = 0.5) -> None:
    """Read until the session has been silent for ``quiet`` seconds."""
    while True:
        try:
            async with asyncio.timeout(quiet):
                await term._read_one()
        except TimeoutError:
            return


async def test_replay_holds_no_query(guest_factory: GuestFactory, tmp_path: Path) -> None:
    volume = tmp_path / "volume"
    volume.mkdir()
    (volume / "queries.bin").write_bytes(b"".join(b"q" + q for q in QUERIES) + b"\r\n")
    guest: GuestProc = guest_factory()
    first = await guest.attach()
    await first.send("cat queries.bin; echo done$((6*7))\n")
    await first.expect("done42")
    assert QUERIES[0] in first.output  # a live viewer does get them: the program asks now

    later = await guest.attach()
    await later.expect("done42")
    for query in QUERIES:
        assert query not in later.output, query
    # What the later viewer's terminal would send back: nothing reaches the shell.
    await later.send("echo still$((1+1))\n")
    await later.expect(r"\$ echo still\$\(\(1\+1\)\)\r\n.*still2\r\n")
    assert b"not found" not in later.output
    await first.close()
    await later.close()


async def reattach_matches(guest: GuestProc, first: Term, cols: int, rows: int) -> None:
    """Attach a second viewer, stop the program, and compare both viewers' screens."""
    later = await guest.attach(cols=cols, rows=rows)
    # The program redraws for the new viewer, and a redraw has no end marker to wait for:
    # give it a second while it still runs (drain() below needs it stopped, top never idles).
    await asyncio.sleep(1.0)
    pid = (await guest.health())["agentPid"]
    os.kill(pid, signal.SIGSTOP)
    try:
        await drain(first)
        await drain(later)
        shown = render(bytes(first.output), cols, rows)
        replayed = render(bytes(later.output), cols, rows)
        assert replayed == shown, "\n".join(replayed) + "\n----\n" + "\n".join(shown)
        assert sum(1 for line in shown if line) > rows // 2  # a real screen, not a blank one
    finally:
        os.kill(pid, signal.SIGCONT)
        await first.close()
        await later.close()


async def test_top_reattach_renders_the_same_screen(guest_factory: GuestFactory) -> None:
    cols, rows = 100, 30
    guest = guest_factory(command=["top", "-d", "0.1"], cols=cols, rows=rows)
    first = await guest.attach(cols=cols, rows=rows)
    async with asyncio.timeout(60):
        while len(first.output) < 3 * 65536:  # well past the replay buffer
            await first._read_one()
    await reattach_matches(guest, first, cols, rows)


async def test_vim_reattach_renders_the_same_screen(
    guest_factory: GuestFactory, tmp_path: Path
) -> None:
    volume = tmp_path / "volume"
    volume.mkdir()
    (volume / "file.txt").write_text(
        "".join(f"line {i} " + "x" * (i % 50) + "\n" for i in range(3000))
    )
    cols, rows = 90, 28
    guest = guest_factory(
        command=["vim", "-u", "NONE", "-N", "-n", "file.txt"], cols=cols, rows=rows
    )
    first = await guest.attach(cols=cols, rows=rows)
    await first.expect("line 0")
    async with asyncio.timeout(60):
        while len(first.output) < 3 * 65536:
            await first.send("\x06")  # page down
            await first._read_one()
    await first.send("50%")
    await reattach_matches(guest, first, cols, rows)
