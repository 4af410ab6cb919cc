"""``make agents-check`` (``python -m bench.agents_check [AGENT…]``): every catalog agent, for real.

Starts a real ``gentity serve`` on a free port with a fresh data directory (so every agent
installs from the real registries, at its pinned version), creates one instance of each catalog
agent (or of those named) with a fake model key, one after another, and prints for each:

- install time: from the log's ``install: running …`` to ``install: done``;
- time to ready: from the create to the agent's ``readyAt`` (health), or the state it ended in;
- the last screen: the agent's terminal, attached after it is ready, rendered as text (pyte);
  with ``--raw DIR``, what the terminal sent is also written to ``DIR/<agent>.txt``.

Then it destroys them and removes everything (also on Ctrl-C or failure). Needs network and
takes minutes; not part of ``make test``. Exit status 0 when every agent reached ``ready``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pyte

from bench.server import BenchServer
from gentity import models
from gentity.client import ApiError, AsyncClient, TerminalOutput
from gentity.client.calls import CREATE_TIMEOUT

FAKE_KEY = "sk-gentity-agents-check-fake-key-0000000000000000"
READY_TIMEOUT = 180.0
"""After ``running``, how long the agent has to become ready."""
GIVE_UP_RESTARTS = 2
"""An agent in back-off after this many restarts is reported as it is, not waited for."""
COLS, ROWS = 120, 36
SCREEN_QUIET = 3.0
"""The screen is taken once the terminal has been quiet this long (or after SCREEN_MAX)."""
SCREEN_MAX = 30.0
_ENDED = frozenset({models.AgentState.READY, models.AgentState.CRASHED, models.AgentState.EXITED})


@dataclass
class Result:
    agent: str
    status: str = "-"
    install_s: float | None = None
    ready_s: float | None = None
    state: str = "-"
    restarts: int = 0
    error: str = ""
    screen: list[str] = field(default_factory=list)


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


async def check(
    client: AsyncClient, server: BenchServer, agent: models.Agent, raw: Path | None
) -> Result:
    result = Result(agent.id)
    model = agent.models[0]
    say(f"{agent.id}: creating ({model.provider}/{model.name})…")
    created = await client.instances.create(
        agent.id,
        model.provider,
        model.name,
        api_key=FAKE_KEY if agent.requires_api_key else None,
        wait=False,
    )
    server.instances.add(created.id)
    try:
        began = await _wait_settled(client, created.id)
        instance = await client.instances.get(created.id)
        result.status = instance.status.value
        result.install_s = await _install_seconds(client, created.id)
        if instance.status is not models.InstanceStatus.RUNNING:
            result.error = f"did not start: {instance.error_message or instance.status.value}"
            return result
        health = await _wait_ready(client, created.id)
        if health is not None:
            result.state, result.restarts = health.state.value, health.restarts
            if health.ready_at is not None:
                result.ready_s = (health.ready_at - began).total_seconds()
        try:
            dump = raw / f"{agent.id}.txt" if raw is not None else None
            result.screen = await _screen(client, created.id, dump)
        except ApiError as exc:
            result.error = str(exc)
        if not result.screen:
            # No terminal (an agent that keeps exiting) or a blank one: its log says more.
            result.error = result.error or "the screen is blank; the end of its log:"
            records = await client.instances.logs(created.id, 15)
            result.screen = [f"{r.level.upper():5} {r.message}" for r in records]
        return result
    finally:
        with contextlib.suppress(Exception):
            await server.delete(created.id)


async def _wait_settled(client: AsyncClient, instance_id: str) -> datetime:
    """Until the start has ended; when the instance was created (its first event)."""
    began: datetime | None = None
    async with asyncio.timeout(CREATE_TIMEOUT):
        async with client.instances.follow_events(instance_id) as events:
            async for event in events:
                began = began or event.time
                if event.to_status is not models.InstanceStatus.PROVISIONING and (
                    event.to_status is not models.InstanceStatus.STARTING
                ):
                    break
    assert began is not None
    return began


async def _install_seconds(client: AsyncClient, instance_id: str) -> float | None:
    records = await client.instances.logs(instance_id, 1000)
    start = next((r for r in records if r.message.startswith("install: running ")), None)
    done = next(
        (r for r in records if r.message in ("install: done", "install: already installed")),
        None,
    )
    if start is None or done is None:
        return None
    return (_when(done.timestamp) - _when(start.timestamp)).total_seconds()


def _when(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


async def _wait_ready(client: AsyncClient, instance_id: str) -> models.AgentHealth | None:
    # Health is asked of the guest on each GET; a script may poll it.
    deadline = time.monotonic() + READY_TIMEOUT
    health = None
    while time.monotonic() < deadline:
        health = (await client.instances.get(instance_id)).agent
        if health is not None and (
            health.state in _ENDED
            or (health.state is models.AgentState.BACKOFF and health.restarts >= GIVE_UP_RESTARTS)
        ):
            return health
        await asyncio.sleep(0.5)
    return health


class _Screen(pyte.Screen):
    """pyte's screen, which would take a private ``CSI ? … m`` for colours; those set
    nothing on the screen."""

    def select_graphic_rendition(self, *attrs: int, private: bool = False) -> None:
        if not private:
            super().select_graphic_rendition(*attrs)


# pyte knows only ``?`` as a private marker: it reads ``CSI < 1 u`` (kitty keyboard, pop
# flags) as an unknown ``<`` and draws the rest, ``1u``, as text, and ``CSI > 4 ; 2 m``
# (xterm's key-modifier options) as underlining. None of these draws anything: drop them.
_PRIVATE_CSI = re.compile(r"\x1b\[[<=>][0-?]*[ -/]*[@-~]")
_UNFINISHED = re.compile(r"\x1b(?:\[[0-?]*[ -/]*)?\Z")


class _Feed:
    """Feeds pyte what it can read, holding a sequence split across two outputs."""

    def __init__(self, screen: pyte.Screen) -> None:
        self._stream = pyte.Stream(screen)
        self._held = ""

    def feed(self, text: str) -> None:
        text = self._held + text
        unfinished = _UNFINISHED.search(text)
        cut = unfinished.start() if unfinished is not None else len(text)
        text, self._held = text[:cut], text[cut:]
        self._stream.feed(_PRIVATE_CSI.sub("", text))


async def _screen(client: AsyncClient, instance_id: str, raw: Path | None) -> list[str]:
    screen = _Screen(COLS, ROWS)
    stream = _Feed(screen)
    received: list[str] = []
    async with client.instances.attach(instance_id, cols=COLS, rows=ROWS) as terminal:
        deadline = time.monotonic() + SCREEN_MAX
        drawn = False  # quiet counts once something was drawn: a slow agent gets SCREEN_MAX
        while (left := deadline - time.monotonic()) > 0:
            try:
                wait = min(SCREEN_QUIET, left) if drawn else left
                event = await asyncio.wait_for(terminal.recv(), wait)
            except TimeoutError:
                break  # quiet: the screen is drawn
            if event is None:
                break
            if isinstance(event, TerminalOutput):
                received.append(event.data)
                stream.feed(event.data)
                # Mode changes alone (Claude Code's first bytes) draw nothing yet.
                drawn = drawn or any(line.strip() for line in screen.display)
    if raw is not None:
        raw.write_text("".join(received), encoding="utf-8", errors="surrogateescape")
    lines = [line.rstrip() for line in screen.display]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}s"


def report(results: list[Result]) -> None:
    print(f"{'AGENT':<12} {'STATUS':<8} {'INSTALL':>8} {'READY':>8}  {'STATE':<8} RESTARTS")
    for r in results:
        print(
            f"{r.agent:<12} {r.status:<8} {_seconds(r.install_s):>8} {_seconds(r.ready_s):>8}  "
            f"{r.state:<8} {r.restarts}"
        )
    for r in results:
        print(f"\n--- {r.agent}: last screen ({COLS}x{ROWS}) ---")
        if r.error:
            print(f"({r.error})")
        for line in r.screen:
            print(line)


async def main(only: list[str], raw: Path | None = None) -> int:
    results: list[Result] = []
    async with BenchServer() as server, AsyncClient(server.url, server.token) as client:
        agents = [a for a in await client.catalog() if not only or a.id in only]
        unknown = sorted(set(only) - {a.id for a in agents})
        if unknown:
            say(f"no such agent: {', '.join(unknown)}")
            return 2
        for agent in agents:
            began = time.monotonic()
            result = await check(client, server, agent, raw)
            took = time.monotonic() - began
            say(f"{agent.id}: {result.status}, agent {result.state} ({took:.0f}s)")
            results.append(result)
    report(results)
    return 0 if all(r.state == models.AgentState.READY.value for r in results) else 1


def run() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.agents_check", description=__doc__)
    parser.add_argument("agents", nargs="*", help="agent ids (default: the whole catalog)")
    parser.add_argument(
        "--raw",
        type=Path,
        metavar="DIR",
        help="also write what each agent's terminal sent, as is, to DIR/<agent>.txt",
    )
    args = parser.parse_args()
    if args.raw is not None:
        args.raw.mkdir(parents=True, exist_ok=True)
    try:
        sys.exit(asyncio.run(main(args.agents, args.raw)))
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    run()
