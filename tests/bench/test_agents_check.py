"""The screen ``make agents-check`` prints: what the agents send is drawn as a terminal would,
and sequences pyte misreads (kitty keyboard flags, xterm key modifiers) draw nothing."""

from __future__ import annotations

from bench.agents_check import _Feed, _Screen


def _draw(*outputs: str) -> str:
    screen = _Screen(40, 2)
    feed = _Feed(screen)
    for output in outputs:
        feed.feed(output)
    return screen.display[0].rstrip()


def test_keyboard_protocol_sequences_draw_nothing() -> None:
    # Codex pushes and pops kitty keyboard flags; pyte alone drew "1u1uu" for these.
    assert _draw("\x1b[>7u> \x1b[<1u\x1b[<1u\x1b[<u\x1b[=1;1u\x1b[>4;2mready") == "> ready"


def test_a_sequence_split_between_two_outputs_is_held() -> None:
    assert _draw("a\x1b", "[<1", "ub\x1b[", "31mc") == "abc"
