"""Readiness: the screen text a prompt pattern reads, and each catalog agent's pattern against
what the agent really draws before and at its main prompt (excerpts of recorded output)."""

from __future__ import annotations

import asyncio
import re

import pytest

from gentity.catalog import load_catalog
from gentity.guest.config import ReadyRule
from gentity.guest.readiness import Readiness, screen_text

pytestmark = pytest.mark.anyio

# What each agent draws once it waits for input (excerpts, escape sequences as recorded).
MAIN_PROMPT: dict[str, list[bytes]] = {
    "claude-code": [
        b"\x1b[38;5;246m\xe2\x9d\xaf \x1b[39m\x1b[K\r\r\n\x1b[38;5;246m  \xe2\x8f\xb8 manual mode "
        b"on \xc2\xb7 ? for shortcuts\x1b[39m\x1b[K",
        # A later redraw that moves the cursor over the blanks between words.
        b"\x1b[36;3H\x1b[38;5;246m?\x1b[36;5Hfor\x1b[36;9Hshortcuts\x1b[39m",
    ],
    "codex": [
        b"\x1b[34;1H\x1b[1m\xe2\x80\xba\x1b[22m \x1b[2mAsk Codex to do anything\x1b[35;1H"
        b"\x1b[22m \x1b[36;1H  \x1b[1m?\x1b[22m for shortcuts\x1b[39m\x1b[49m\x1b[0m",
        b"\x1b[36;9H\x1b[22magen\x1b[36;14Hs \xc2\xb7 \x1b[1m?\x1b[36;20H\x1b[22mfor"
        b"\x1b[36;24Hshortcuts\x1b[39m",
    ],
    "gemini-cli": [
        b"\x1b[38;2;215;119;87m > \x1b[39m  \x1b[38;2;108;112;134mType your message or "
        b"@path/to/file\x1b[39m",
    ],
    "opencode": [
        b"\x1b[19;27H\x1b[38;5;8m\x1b[48;5;234mAsk anything\xe2\x80\xa6 "
        b'"Fix a TODO in the codebase"\x1b[0m',
    ],
    "aider": [
        b"\x1b[7mAider v0.86.2\x1b[0m\r\nModel: anthropic/claude-sonnet-4-5 with diff edit "
        b"format, infinite output\r\nGit repo: .git with 0 files\r\nRepo-map: using 4096 "
        b"tokens, auto refresh\r\n\x1b[38;5;40m\xe2\x94\x80\xe2\x94\x80\x1b[0m\r\n"
        b"\x1b[?2004h\x1b[?1l\x1b[?25l\x1b[0m\x1b[?7l\x1b[0m\x1b[J\x1b[0;38;5;40m>  \x1b[0m"
        b"\r\r\n\r\r\n\r\r\n\x1b[0;38;5;40m   \r\x1b[119C \r\x1b[3A\x1b[2C\x1b[?7h\x1b[0m",
        # In its "ask" mode.
        b"\x1b[0m\x1b[J\x1b[0;38;5;40mask>  \x1b[0m",
    ],
}

# What they draw before: blank starts, sign-in menus, questions. None may count as ready.
NOT_YET: dict[str, list[bytes]] = {
    "claude-code": [
        # Waiting on the network for seconds with nothing on the screen.
        b"\x1b7\x1b[r\x1b8\x1b[?25h",
        b"\x1b[38;5;220m\xe2\x94\x80\xe2\x94\x80\x1b[39m\r\r\n  Detected a custom API key in your "
        b"environment\r\n  Do you want to use this API key?\r\n    Yes\r\n  \xe2\x9d\xaf No "
        b"(recommended)\r\n  Enter to confirm \xc2\xb7 Esc to cancel",
    ],
    "codex": [
        b"  Welcome to Codex, OpenAI's command-line coding agent\r\n\r\n  Choose how you want "
        b"to use Codex.\r\n\r\n> 1. Sign in with ChatGPT\r\n  2. Sign in with Device Code\r\n"
        b"  3. Sign in another way\r\n\r\n  Press enter to continue",
    ],
    "gemini-cli": [
        b" Gemini CLI v0.61.0\r\n Do you trust this folder?\r\n \xe2\x97\x8f 1. Trust folder"
        b"\r\n   2. Trust parent folder\r\n   3. Don't trust",
    ],
    "opencode": [
        b"\x1b[?1049h\x1b[1;1H\x1b[38;5;15m\x1b[49m" + b" " * 120 + b"\x1b[2;1H" + b" " * 120,
    ],
    "aider": [
        b"\x1b[0;32m\xe2\x94\x80\xe2\x94\x80\xe2\x94\x80\x1b[0m\r\nNo git repo found, create "
        b"one to track aider's changes (recommended)? (Y)es/(N)o [Yes]: ",
        b'\x1b[38;5;214mUpdate git name with: git config user.name "Your Name"\x1b[0m\r\n'
        b"HTTPSConnectionPool(host='raw.githubusercontent.com', port=443): Max retries "
        b"exceeded\r\n\x1b[7mAider v0.86.2\x1b[0m\r\nModel: anthropic/claude-sonnet-4-5 "
        b"with diff edit format, infinite output\r\n",
    ],
}


def _rule(agent_id: str) -> ReadyRule:
    agent = load_catalog().get(agent_id)
    assert agent is not None
    return agent.ready


def test_screen_text_reads_cursor_moves_as_blanks() -> None:
    assert screen_text(b"Claude\x1b[19GCode") == "Claude Code"
    assert screen_text(b"\x1b[1m?\x1b[36;20Hfor\x1b[2Cshortcuts") == "? for shortcuts"
    assert screen_text(b"a\x1b[31mb\x1b]0;title\x07c\x1bP+q\x1b\\d\x07") == "abcd"
    assert screen_text(b"caf\xc3") == "caf\ufffd"


def test_every_agent_but_the_shell_waits_for_its_prompt() -> None:
    assert {a.id for a in load_catalog().agents if a.ready.pattern is None} == {"shell"}
    assert (
        set(MAIN_PROMPT)
        == set(NOT_YET)
        == {a.id for a in load_catalog().agents if a.ready.pattern is not None}
    )


@pytest.mark.parametrize("agent_id", sorted(MAIN_PROMPT))
def test_the_pattern_matches_the_main_prompt_only(agent_id: str) -> None:
    pattern = _rule(agent_id).pattern
    assert pattern is not None
    for output in MAIN_PROMPT[agent_id]:
        assert re.search(pattern, screen_text(output)), output
    for output in NOT_YET[agent_id]:
        assert not re.search(pattern, screen_text(output)), output


async def test_quiet_before_the_prompt_is_not_ready() -> None:
    # Claude Code's start: a few bytes, then seconds of silence, then its prompt.
    fired: list[float] = []
    loop = asyncio.get_running_loop()
    readiness = Readiness(
        ReadyRule(quiet_ms=50, pattern=_rule("claude-code").pattern),
        lambda: fired.append(loop.time()),
    )
    readiness.feed(NOT_YET["claude-code"][0])
    await asyncio.sleep(0.2)
    assert fired == [] and not readiness.ready
    shown = loop.time()
    readiness.feed(MAIN_PROMPT["claude-code"][0])
    await asyncio.sleep(0.2)
    assert readiness.ready
    assert len(fired) == 1 and fired[0] >= shown + 0.04
    readiness.cancel()
