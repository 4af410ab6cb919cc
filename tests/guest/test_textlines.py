"""Terminal output to log lines."""

from __future__ import annotations

import pytest

from gentity.guest.redact import Redactor
from gentity.guest.textlines import LineLogger, strip_terminal
from tests.waiting import wait_until


def test_strip_terminal() -> None:
    assert strip_terminal("\x1b[1;32mgreen\x1b[0m text\r") == "green text"
    assert strip_terminal("\x1b]0;title\x07prompt$ ") == "prompt$ "
    assert strip_terminal("\x1b(Babc\x1b[?2004h\x1b=") == "abc"
    assert strip_terminal("tab\tkept\x08\x07") == "tab\tkept"


@pytest.mark.anyio
async def test_line_logger() -> None:
    lines: list[str] = []
    logger = LineLogger(lines.append, quiet=0.05, max_line=10)
    logger.feed(b"one\r\ntw")
    logger.feed(b"o\r\n\x1b[31m\x1b[0m\r\n\xc3")  # colour-only line is dropped
    logger.feed(b"\xa9 \xff\n")  # UTF-8 split across chunks; invalid byte replaced
    assert lines == ["one", "two", "\u00e9 \ufffd"]
    logger.feed(b"$ ")  # a prompt without newline appears after a quiet period
    assert lines[-1] != "$"
    await wait_until(lambda: len(lines) == 4, "the quiet period flushes the prompt")
    assert lines[-1] == "$"
    logger.feed(b"x" * 25 + b"\n")
    assert lines[-3:] == ["x" * 10, "x" * 10, "x" * 5]
    logger.feed(b"tail")
    logger.close()
    assert lines[-1] == "tail"


def test_cursor_moves_between_words_keep_the_words_apart() -> None:
    # Ink moves right instead of printing spaces; ratatui jumps over blank cells.
    assert strip_terminal("Unable\x1b[1Cto\x1b[2Cconnect") == "Unable to  connect"
    assert strip_terminal("to\x1b[3;12HAnthropic\x1b[20Gservices\x1b[K") == "to Anthropic services"
    assert strip_terminal("\x1b[1;1H\x1b[1mbold\x1b[0m\x1b[5`x") == "bold x"
    assert strip_terminal("é\x1b[31m中\x1b[0m") == "é中"  # no move, no gap


@pytest.mark.anyio
@pytest.mark.parametrize("secrets", [[], ["s3cret-value-xyz"], ["never-printed-value"]])
async def test_a_chunk_of_lines_is_cleaned_as_line_by_line(secrets: list[str]) -> None:
    # A busy log takes a faster path through whole chunks; what comes out must be the same.
    redactor = Redactor(secrets)
    lines: list[str] = []
    logger = LineLogger(emit_lines=lines.extend, max_line=12, redact=redactor)
    raw = [
        "plain",
        "  padded  ",
        "",
        "\x1b[1mbold\x1b[0m and s3cret-value-xyz here",
        "\t",
        "a line longer than twelve characters",
        "s3cret-value-xyz",
        "tail",
    ]
    logger.feed("\r\n".join(raw[:3]).encode() + b"\r\n")
    logger.feed("\r\n".join(raw[3:]).encode() + b"\r\n")
    expected = []
    for line in raw:
        clean = redactor(strip_terminal(line).strip())
        expected += [clean[i : i + 12] for i in range(0, len(clean), 12)]
    assert lines == expected
    assert any("s3cret" in line for line in lines) == (secrets != ["s3cret-value-xyz"])
