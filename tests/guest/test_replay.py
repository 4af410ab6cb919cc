"""The replay filter: no terminal query survives, however the output was split."""

from __future__ import annotations

import random

import pytest

from gentity.guest.replay import ReplayBuffer, SequenceFilter

#: Every sequence here makes some terminal (xterm, xterm.js, tmux, kitty) answer or act.
QUERIES = [
    b"\x1b[6n",  # cursor position report
    b"\x1b[?6n",
    b"\x1b[5n",  # device status
    b"\x1b[?996n",  # colour scheme
    b"\x1b[c",  # primary device attributes
    b"\x1b[0c",
    b"\x1b[>c",  # secondary
    b"\x1b[>0c",
    b"\x1b[=c",  # tertiary
    b"\x1b]10;?\x07",  # foreground colour
    b"\x1b]11;?\x1b\\",  # background colour
    b"\x1b]12;?\x07",  # cursor colour
    b"\x1b]4;1;?\x07",  # palette entry
    b"\x1b]52;c;?\x07",  # clipboard
    b"\x1b]52;c;aGk=\x07",  # clipboard write
    b"\x1b]9;notify\x07",
    b"\x1bP$qm\x1b\\",  # DECRQSS
    b"\x1bP+q544e\x1b\\",  # XTGETTCAP
    b"\x1bPtmux;\x1b\x1b[6n\x1b\\",  # tmux passthrough
    b"\x1b_Gi=1,a=q;\x1b\\",  # kitty graphics query
    b"\x1b[?u",  # kitty keyboard flags
    b"\x1b[>q",  # XTVERSION
    b"\x1b[>0q",
    b"\x1b[?2004$p",  # DECRQM
    b"\x1b[4$p",
    b"\x1b[14t",  # window ops and reports
    b"\x1b[18t",
    b"\x1b[16t",
    b"\x1b[21t",
    b"\x1b[8;50;100t",
    b"\x1b[x",  # DECREQTPARM
    b"\x1b[1;1;1;1;1*y",  # DECRQCRA
    b"\x1b[?1;1;0S",  # XTSMGRAPHICS
    b"\x1b[?4m",  # XTQMODKEYS
    b"\x1bZ",  # DECID
    b"\x05",  # ENQ: answerback
    b"\xc2\x9b6n",  # 8-bit CSI as xterm.js reads it
    b"\xc2\x9d11;?\x07",  # 8-bit OSC
    b"\xc2\x90$qm\xc2\x9c",  # 8-bit DCS
]

#: Drawing and mode changes that must reach a later viewer unchanged.
SAFE = [
    b"\x1b[?1049h",
    b"\x1b[H\x1b[2J",
    b"\x1b[1;31mred\x1b[0m",
    b"\x1b[38:2::10:20:30m",
    b"\x1b[3;20r",
    b"\x1b[5;10H",
    b"\x1b[2 q",  # cursor shape
    b"\x1b[?25l",
    b"\x1b[?2004h",
    b"\x1b[>1u",  # kitty keyboard: push flags
    b"\x1b]0;title \xc3\xa9\x07",
    b"\x1b]8;;https://example.com\x1b\\link\x1b]8;;\x1b\\",
    b"\x1b]11;rgb:00/00/00\x07",
    b"\x1b(B",
    b"\x1b7\x1b8",
    b"\x1bc",
    "ünïcödé ✓ 中文".encode(),
]


def stream() -> tuple[bytes, bytes]:
    """A session's output with every query between safe output, and what may be replayed."""
    out, expected = bytearray(), bytearray()
    for i, query in enumerate(QUERIES):
        safe = SAFE[i % len(SAFE)] + f" line{i}\r\n".encode()
        out += safe + query
        expected += safe
    return bytes(out), bytes(expected)


def filtered(data: bytes, cuts: list[int]) -> bytes:
    seq = SequenceFilter()
    out = bytearray()
    last = 0
    for cut in [*cuts, len(data)]:
        out += seq.feed(data[last:cut])
        last = cut
    return bytes(out)


@pytest.mark.parametrize("query", QUERIES, ids=repr)
def test_each_query_is_dropped(query: bytes) -> None:
    data = b"before" + query + b"after"
    assert filtered(data, []) == b"beforeafter"
    # Split at every position: the halves must never leak.
    for cut in range(1, len(data)):
        assert filtered(data, [cut]) == b"beforeafter", cut


@pytest.mark.parametrize("safe", SAFE, ids=repr)
def test_drawing_is_kept(safe: bytes) -> None:
    for cut in range(len(safe) + 1):
        assert filtered(b"a" + safe + b"z", [cut + 1]) == b"a" + safe + b"z"


def test_any_chunking_gives_the_same_replay() -> None:
    data, expected = stream()
    rng = random.Random(12)
    for _ in range(200):
        cuts = sorted(rng.sample(range(1, len(data)), rng.randint(1, 40)))
        assert filtered(data, cuts) == expected
    assert filtered(data, list(range(1, len(data)))) == expected  # byte by byte


def test_malformed_and_aborted_sequences_cannot_smuggle_a_query() -> None:
    for data in [
        b"\x1b[6\x00n",  # a control inside: the terminal would still see CSI 6 n
        b"\x1b]11;?\x1b[6n",  # OSC aborted by a query
        b"\x1bP$q\x1b[c",  # DCS aborted by a query
        b"\x1b\x1b[5n",
        b"\x1b[" + b"1;" * 5000 + b"6n",  # oversized
        b"\x1b]0;" + b"x" * 10000 + b"\x1b[6n\x07",
    ]:
        for cut in (0, 1, 2, 3, len(data) // 2, len(data) - 1):
            out = filtered(data, [cut] if cut else [])
            for query in (b"\x1b[6n", b"\x1b[c", b"\x1b[5n", b"?\x07", b"\x1b]11"):
                assert query not in out, (data[:40], cut, out[:80])


def test_buffer_keeps_modes_of_evicted_output_and_cuts_at_a_boundary() -> None:
    buf = ReplayBuffer(1000)
    buf.append(b"\x1b[?1049h\x1b[?25l\x1b[?2004h\x1b[6n")
    buf.append("é".encode() * 2000)  # pushes the mode changes out
    buf.append(b"\x1b[?2004l\x1b[1mX")
    value = buf.getvalue()
    assert value.startswith(b"\x1b[?1049h\x1b[?25l\x1b[?2004h")
    body = value[len(b"\x1b[?1049h\x1b[?25l\x1b[?2004h") :]
    body.decode()  # whole characters only
    assert body.endswith(b"\x1b[?2004l\x1b[1mX") and b"\x1b[6n" not in value
    assert len(buf) <= 1000 and buf.full_screen
    assert buf.modes == {1049: True, 25: False, 2004: False}
    buf.append(b"\x1b[?1049l\x1b[?25h")
    assert not buf.full_screen


def test_evicted_mode_changes_apply_in_order_whether_7_or_8_bit() -> None:
    buf = ReplayBuffer(100)
    # Set by C1 CSI, reset by ESC c, set again by C1, cleared by 7-bit: the last one wins.
    buf.append(b"\xc2\x9b?2004h\x1bc\xc2\x9b?1049h\x1b[?1049l\xc2\x9b?25l\nx")
    buf.append(b"y" * 99 + b"\n")
    assert buf.getvalue().startswith(b"\x1b[?25l")
    assert b"1049" not in buf.getvalue() and b"2004" not in buf.getvalue()


def test_buffer_never_starts_inside_a_sequence() -> None:
    buf = ReplayBuffer(300)
    for i in range(200):
        buf.append(f"\x1b[{i % 20 + 1};{i % 70 + 1}H\x1b]0;t{i}\x07\x1b[38;5;{i}mcell".encode())
        value = buf.getvalue()
        assert value.startswith((b"\x1b", b"cell")), value[:20]
