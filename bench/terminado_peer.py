"""The Python peer for the terminal figures: terminado (Jupyter's terminal server) serving the
same ``bash -l`` in the same environment as the raw PTY baseline.

``PeerServer`` runs it as a process of its own, as a deployment would (a tornado app with one
``UniqueTermManager``: a fresh terminal per WebSocket, like Gentity's own ``?shell=1``), on a
free loopback port. ``python -m bench.terminado_peer PORT HOME`` is that process.

terminado speaks JSON arrays: the client sends ``["stdin", text]`` and ``["set_size", rows,
cols]``; the server sends ``["setup", {}]`` once, then ``["stdout", text]``.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

from bench.pty_baseline import SHELL_COMMAND, guest_like_env
from bench.terminal import Terminal

PATH = "/websocket"


class TerminadoTerminal(Terminal):
    """:class:`Terminal` over terminado's protocol, so the figures drive both the same way."""

    @classmethod
    async def open_sized(cls, url: str, cols: int, rows: int) -> TerminadoTerminal:
        term = await cls.open(url, compression=True)
        assert isinstance(term, TerminadoTerminal)
        await term.ws.send(json.dumps(["set_size", rows, cols]))
        return term

    def encode_input(self, data: str) -> str:
        return json.dumps(["stdin", data])

    def decode(self, raw: str | bytes) -> str:
        message = json.loads(raw)
        if message[0] == "stdout":
            return str(message[1])
        if message[0] == "disconnect":
            self.exit = {"type": "disconnect"}
        return ""


class PeerServer:
    """``with PeerServer(home) as peer:`` a terminado server for ``bash -l`` in ``home``."""

    def __init__(self, home: Path) -> None:
        self.home = home
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}{PATH}"

    def __enter__(self) -> PeerServer:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.terminado_peer", str(self.port), str(self.home)],
            env={**guest_like_env(self.home), "PYTHONPATH": str(Path(__file__).parent.parent)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                raise RuntimeError(f"terminado exited: {err.strip()[-500:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        self.close()
        raise RuntimeError("terminado did not listen within 20 s")

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


async def _serve(port: int, home: Path) -> None:
    import tornado.web
    from terminado.management import UniqueTermManager
    from terminado.websocket import TermSocket

    manager = UniqueTermManager(shell_command=SHELL_COMMAND, term_settings={"cwd": str(home)})
    app = tornado.web.Application([(PATH, TermSocket, {"term_manager": manager})])
    app.listen(port, address="127.0.0.1")
    # Until terminated; each bash gets SIGHUP when its terminal's master closes with us.
    await asyncio.Event().wait()


if __name__ == "__main__":
    os.chdir(sys.argv[2])
    asyncio.run(_serve(int(sys.argv[1]), Path(sys.argv[2])))
