"""A tiny WebSocket terminal client for tests."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from websockets.asyncio.client import ClientConnection, connect


class Terminal:
    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.output = ""
        self.exit: dict[str, Any] | None = None

    @classmethod
    async def open(cls, url: str, **kwargs: Any) -> Terminal:
        return cls(await connect(url, open_timeout=10, **kwargs))

    async def send(self, data: str) -> None:
        await self.ws.send(json.dumps({"type": "input", "data": data}))

    async def resize(self, cols: int, rows: int) -> None:
        await self.ws.send(json.dumps({"type": "resize", "cols": cols, "rows": rows}))

    async def expect(self, text: str, timeout: float = 10) -> str:
        async with asyncio.timeout(timeout):
            while text not in self.output:
                message = json.loads(await self.ws.recv())
                if message["type"] == "output":
                    self.output += message["data"]
                elif message["type"] == "exit":
                    self.exit = message
                    raise AssertionError(f"session exited before {text!r}: {self.output!r}")
        return self.output

    async def wait_exit(self, timeout: float = 10) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while self.exit is None:
                message = json.loads(await self.ws.recv())
                if message["type"] == "exit":
                    self.exit = message
                else:
                    self.output += message.get("data", "")
        return self.exit

    async def close(self) -> None:
        await self.ws.close()


def ws_url(base: str, instance_id: str, token: str | None = None, extra: str = "") -> str:
    url = base.replace("http://", "ws://") + f"/api/instances/{instance_id}/terminal"
    query = "&".join(q for q in (f"token={token}" if token else "", extra) if q)
    return f"{url}?{query}" if query else url
