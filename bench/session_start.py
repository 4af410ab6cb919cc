"""Figure 9: terminal session start, from opening the WebSocket to the first output.

Gentity's ``?shell=1`` (a fresh login shell for this connection, beside the agent) is the like
of terminado's ``UniqueTermManager`` (a fresh terminal per WebSocket): both start ``bash -l``
on a new PTY and send its first prompt. Attaching to the agent's running session is measured
too: it answers with the session's replay. Runs rotate between the three.
"""

from __future__ import annotations

import shutil
import time

from bench.context import Context, say
from bench.report import Figure
from bench.stats import median, ms, percentile
from bench.terminado_peer import PeerServer, TerminadoTerminal
from bench.terminal import Terminal

GOAL = 0.040
COLS, ROWS = 200, 50


async def _first_output(term: Terminal, started: float) -> float:
    while not await term.next_output(10.0):
        pass
    return time.perf_counter() - started


async def _gentity(url: str) -> float:
    started = time.perf_counter()
    async with await Terminal.open(url) as term:
        return await _first_output(term, started)


async def _terminado(url: str) -> float:
    started = time.perf_counter()
    term = await TerminadoTerminal.open_sized(url, COLS, ROWS)
    async with term:
        return await _first_output(term, started)


async def run(ctx: Context) -> Figure:
    fig = ctx.report.add(
        Figure("9", "session-start", "Terminal session start", goal=f"p50 <= {ms(GOAL)}")
    )
    runs = ctx.plan.startup_runs
    say(f"[9] terminal session start: {runs} connections each, to a fresh shell and terminado")
    instance_id = await ctx.work_instance()
    shell_url = ctx.server.ws_url(instance_id, f"shell=1&cols={COLS}&rows={ROWS}")
    attach_url = ctx.server.ws_url(instance_id, f"cols={COLS}&rows={ROWS}")
    home = ctx.fresh_home()
    shell: list[float] = []
    attach: list[float] = []
    peer: list[float] = []
    try:
        with PeerServer(home) as server:
            await _terminado(server.url)  # warm-up, not counted
            await _gentity(shell_url)
            for _ in range(runs):
                shell.append(await _gentity(shell_url))
                peer.append(await _terminado(server.url))
                attach.append(await _gentity(attach_url))
    finally:
        shutil.rmtree(home, ignore_errors=True)
    fig.measured = f"fresh shell p50 {ms(median(shell))}, p95 {ms(percentile(shell, 95))}"
    fig.baseline = f"terminado p50 {ms(median(peer))}, p95 {ms(percentile(peer, 95))}"
    fig.comparison = f"{median(shell) / median(peer):.2f}x terminado"
    fig.passed = median(shell) <= GOAL
    fig.notes.append(
        f"attaching to the agent's running session (its replay first): p50 "
        f"{ms(median(attach))}, p95 {ms(percentile(attach, 95))}; {runs} runs each"
    )
    fig.data = {"shellSeconds": shell, "attachSeconds": attach, "terminadoSeconds": peer}
    return fig
