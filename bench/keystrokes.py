"""Figure 2: keystroke round trip through the WebSocket, beside terminado and a raw PTY.

Each side types the same characters into an interactive ``bash -l`` (readline echoes them) and
waits for the echo; the line is cleared with Ctrl-U every ``clear_every`` characters. Blocks of
keystrokes rotate between Gentity's terminal WebSocket, terminado (the Python peer, in a process
of its own: see :mod:`bench.terminado_peer`) and a raw PTY, so that load changes hit all alike.
The goal (issue 11) compares with the best peer: p50 within 0.1 ms of its p50, p99 at most
twice its p99. (ttyd, the C peer, has no Debian package on these machines.)
"""

from __future__ import annotations

import shutil
import string

from bench.context import Context, say
from bench.pty_baseline import RawPty
from bench.report import Figure
from bench.stats import median, ms, percentile
from bench.terminado_peer import PeerServer, TerminadoTerminal
from bench.terminal import Terminal

GOAL_ADDED_P50 = 0.0001
GOAL_P99_FACTOR = 2.0
CTRL_U = "\x15"
CHARS = string.ascii_lowercase
WARMUP = 20
COLS, ROWS = 200, 50


async def _type_block(term: Terminal, chars: list[str], times: list[float]) -> None:
    for char in chars:
        times.append(await term.keystroke(char))
    await term.send(CTRL_U)
    await term.drain()


async def run(ctx: Context) -> Figure:
    fig = ctx.report.add(
        Figure(
            "2",
            "keystrokes",
            "Keystroke round trip",
            goal="p50 <= peer p50 + 0.1 ms, p99 <= 2x peer p99",
        )
    )
    plan = ctx.plan
    say(
        f"[2] keystroke round trip: {plan.keystrokes} keystrokes over Gentity's WebSocket, "
        "terminado and a raw PTY"
    )
    instance_id = await ctx.work_instance()
    home = ctx.fresh_home()
    ws_times: list[float] = []
    peer_times: list[float] = []
    raw_times: list[float] = []
    try:
        with PeerServer(home) as peer:
            term = await Terminal.open(ctx.server.ws_url(instance_id, f"cols={COLS}&rows={ROWS}"))
            other = await TerminadoTerminal.open_sized(peer.url, COLS, ROWS)
            async with term, other:
                for side in (term, other):
                    await side.sync()
                with RawPty(home, cols=COLS, rows=ROWS) as pty:
                    pty.write(b"echo sync-$((6*7))\r")
                    pty.read_until(b"sync-42")
                    pty.drain()
                    # Warm-up, not counted.
                    warm = [CHARS[i % 26] for i in range(WARMUP)]
                    for side in (term, other):
                        await _type_block(side, warm, [])
                    for char in warm:
                        pty.keystroke(char.encode())
                    pty.write(CTRL_U.encode())
                    pty.drain()
                    typed = 0
                    while typed < plan.keystrokes:
                        block = min(plan.clear_every, plan.keystrokes - typed)
                        chars = [CHARS[(typed + i) % 26] for i in range(block)]
                        await _type_block(term, chars, ws_times)
                        await _type_block(other, chars, peer_times)
                        for char in chars:
                            raw_times.append(pty.keystroke(char.encode()))
                        pty.write(CTRL_U.encode())
                        pty.drain()
                        typed += block
    finally:
        shutil.rmtree(home, ignore_errors=True)
    p50, p99 = median(ws_times), percentile(ws_times, 99)
    peer50, peer99 = median(peer_times), percentile(peer_times, 99)
    raw50, raw99 = median(raw_times), percentile(raw_times, 99)
    fig.measured = f"p50 {ms(p50)}, p99 {ms(p99)}"
    fig.baseline = (
        f"terminado: p50 {ms(peer50)}, p99 {ms(peer99)}; raw PTY: p50 {ms(raw50)}, p99 {ms(raw99)}"
    )
    fig.comparison = f"{(p50 - peer50) * 1000:+.3f} ms p50, {p99 / peer99:.2f}x p99 (vs terminado)"
    fig.passed = p50 - peer50 <= GOAL_ADDED_P50 and p99 <= GOAL_P99_FACTOR * peer99
    fig.notes.append(
        f"{len(ws_times)} keystrokes each; WebSocket permessage-deflate negotiated: "
        f"{'yes' if term.compressed else 'no'}; max {ms(max(ws_times))}, terminado "
        f"{ms(max(peer_times))}, raw PTY {ms(max(raw_times))}; over the raw PTY: "
        f"+{ms(p50 - raw50)} p50"
    )
    fig.data = {
        "websocketSeconds": ws_times,
        "terminadoSeconds": peer_times,
        "rawPtySeconds": raw_times,
        "p50": p50,
        "p99": p99,
        "peerP50": peer50,
        "peerP99": peer99,
        "baselineP50": raw50,
        "baselineP99": raw99,
    }
    return fig
