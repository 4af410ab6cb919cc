"""Figure 2: keystroke round trip through the WebSocket vs. a raw PTY running bash.

Both sides type the same characters into an interactive ``bash -l`` (readline echoes them) and
wait for the echo; the line is cleared with Ctrl-U every ``clear_every`` characters. Blocks of
keystrokes alternate between the two so that load changes hit both alike.
"""

from __future__ import annotations

import shutil
import string

from bench.context import Context, say
from bench.pty_baseline import RawPty
from bench.report import Figure
from bench.stats import median, ms, percentile
from bench.terminal import Terminal

GOAL_ADDED_P50 = 0.001
CTRL_U = "\x15"
CHARS = string.ascii_lowercase
WARMUP = 20


async def run(ctx: Context) -> Figure:
    fig = ctx.report.add(
        Figure("2", "keystrokes", "Keystroke round trip", goal="p50 added < 1 ms over raw PTY")
    )
    plan = ctx.plan
    say(f"[2] keystroke round trip: {plan.keystrokes} keystrokes over the WebSocket and raw PTY")
    instance_id = await ctx.work_instance()
    home = ctx.fresh_home()
    ws_times: list[float] = []
    raw_times: list[float] = []
    try:
        async with await Terminal.open(ctx.server.ws_url(instance_id, "cols=200&rows=50")) as term:
            await term.sync()
            with RawPty(home, cols=200, rows=50) as pty:
                pty.write(b"echo sync-$((6*7))\r")
                pty.read_until(b"sync-42")
                pty.drain()
                # Warm-up, not counted.
                for i in range(WARMUP):
                    await term.keystroke(CHARS[i % 26])
                    pty.keystroke(CHARS[i % 26].encode())
                await term.send(CTRL_U)
                await term.drain()
                pty.write(CTRL_U.encode())
                pty.drain()
                typed = 0
                while typed < plan.keystrokes:
                    block = min(plan.clear_every, plan.keystrokes - typed)
                    chars = [CHARS[(typed + i) % 26] for i in range(block)]
                    for char in chars:
                        ws_times.append(await term.keystroke(char))
                    await term.send(CTRL_U)
                    await term.drain()
                    for char in chars:
                        raw_times.append(pty.keystroke(char.encode()))
                    pty.write(CTRL_U.encode())
                    pty.drain()
                    typed += block
    finally:
        shutil.rmtree(home, ignore_errors=True)
    p50, p99 = median(ws_times), percentile(ws_times, 99)
    raw50, raw99 = median(raw_times), percentile(raw_times, 99)
    added = p50 - raw50
    fig.measured = f"p50 {ms(p50)}, p99 {ms(p99)}"
    fig.baseline = f"raw PTY: p50 {ms(raw50)}, p99 {ms(raw99)}"
    fig.comparison = f"+{ms(added)} p50, +{ms(p99 - raw99)} p99"
    fig.passed = added < GOAL_ADDED_P50
    fig.notes.append(
        f"{len(ws_times)} keystrokes each; WebSocket permessage-deflate negotiated: "
        f"{'yes' if term.compressed else 'no'}; max {ms(max(ws_times))} vs {ms(max(raw_times))}"
    )
    fig.data = {
        "websocketSeconds": ws_times,
        "rawPtySeconds": raw_times,
        "p50": p50,
        "p99": p99,
        "baselineP50": raw50,
        "baselineP99": raw99,
        "addedP50": added,
    }
    return fig
