"""The terminal WebSocket: authentication before the upgrade, viewers, replay, resize, exit."""

from __future__ import annotations

import asyncio
import json
import logging

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.extensions.permessage_deflate import PerMessageDeflate

from tests.conftest import LiveServer
from tests.server.terminal_client import Terminal, ws_url
from tests.server.test_instances import create_shell


def test_viewers_replay_resize_and_exit(bearer: httpx.Client, token: str) -> None:
    iid = create_shell(bearer)["id"]
    base = str(bearer.base_url)

    async def scenario() -> None:
        first = await Terminal.open(ws_url(base, iid, token))
        await first.send("echo first-$((1+1))\r")
        await first.expect("first-2")
        # A second viewer sees the earlier output (replay) and then the same live output.
        second = await Terminal.open(
            ws_url(base, iid), additional_headers={"Authorization": f"Bearer {token}"}
        )
        await second.expect("first-2")
        await first.send("echo both-$((2+2))\r")
        await first.expect("both-4")
        await second.expect("both-4")
        await second.resize(91, 37)
        # No wait: frames reach the guest in order, and it sizes the terminal before it
        # writes the next input, so `stty size` already sees the new size.
        await second.send("stty size\r")
        await second.expect("37 91")
        # Detaching a viewer does not kill the agent.
        await second.close()
        await first.send("echo still-$((3+3))\r")
        await first.expect("still-6")
        await first.send("exit 3\r")
        assert (await first.wait_exit()) == {"type": "exit", "exitCode": 3, "signal": None}
        # The agent's session comes back by policy: a new viewer can attach again.
        third = None
        for _ in range(50):
            try:
                third = await Terminal.open(ws_url(base, iid, token))
                break
            except InvalidStatus:
                await asyncio.sleep(0.1)
        assert third is not None
        await third.send("echo again-$((4+4))\r")
        await third.expect("again-8")
        await third.close()

    asyncio.run(scenario())
    bearer.delete(f"/api/instances/{iid}")


def test_fresh_shell_for_a_viewer(bearer: httpx.Client, token: str) -> None:
    iid = create_shell(bearer)["id"]

    async def scenario() -> None:
        shell = await Terminal.open(ws_url(str(bearer.base_url), iid, token, "shell=1"))
        await shell.send("echo private-$((5+5))\r")
        await shell.expect("private-10")
        await shell.close()

    asyncio.run(scenario())
    logs = bearer.get(f"/api/instances/{iid}/logs", params={"lines": 1000}).json()["logs"]
    assert not any("private-10" in line["message"] for line in logs)
    bearer.delete(f"/api/instances/{iid}")


def test_bulk_and_non_ascii_output_arrive_whole_and_in_order(
    bearer: httpx.Client, token: str
) -> None:
    iid = create_shell(bearer)["id"]

    async def scenario() -> None:
        term = await Terminal.open(ws_url(str(bearer.base_url), iid, token), max_size=None)
        # About 2.4 MB: more than the guest lets a viewer lag behind before it pauses.
        await term.send(
            "printf 'caf\\303\\251 \\342\\225\\255\\n'; seq 1 350000; echo end-$((7*6))\r"
        )
        output = await term.expect("end-42", timeout=60)
        await term.close()
        assert "café ╭" in output
        lines = output.replace("\r", "").split("\n")
        first = lines.index("1")
        assert lines[first : first + 350000] == [str(n) for n in range(1, 350001)]

    asyncio.run(scenario())
    bearer.delete(f"/api/instances/{iid}")


def test_a_burst_of_input_messages_arrives_whole_and_in_order(
    bearer: httpx.Client, token: str
) -> None:
    # The server reads the next message while the app is still busy with the last one; none
    # may be lost or overtaken. One message per keystroke, sent without waiting.
    iid = create_shell(bearer)["id"]
    digits = "".join(str(n % 10) for n in range(400))

    async def scenario() -> None:
        term = await Terminal.open(ws_url(str(bearer.base_url), iid, token))
        for char in f"echo :{digits}:$((6*7))\r":
            await term.ws.send(json.dumps({"type": "input", "data": char}))
        await term.expect(f":{digits}:42")
        deflate = [e for e in term.ws.protocol.extensions if isinstance(e, PerMessageDeflate)]
        assert deflate and deflate[0].remote_max_window_bits == 12
        await term.close()

    asyncio.run(scenario())
    bearer.delete(f"/api/instances/{iid}")


def test_refused_before_upgrade(
    server: LiveServer, bearer: httpx.Client, admin: httpx.Client
) -> None:
    iid = create_shell(bearer)["id"]
    base = server.url
    session_cookie = "; ".join(f"{k}={v}" for k, v in admin.cookies.items())

    async def status_of(url: str, **kwargs: object) -> int:
        with pytest.raises(InvalidStatus) as refused:
            await Terminal.open(url, **kwargs)
        return refused.value.response.status_code

    async def scenario() -> None:
        assert await status_of(ws_url(base, iid)) == 401
        assert await status_of(ws_url(base, iid, "gn_live_forged")) == 401
        # A cookie alone is not enough from a foreign page.
        assert (
            await status_of(
                ws_url(base, iid),
                additional_headers={"Cookie": session_cookie},
                origin="https://evil.example",
            )
            == 401
        )
        # From this server's own origin, the cookie works.
        term = await Terminal.open(
            ws_url(base, iid), additional_headers={"Cookie": session_cookie}, origin=base
        )
        await term.send("echo cookie-$((6+1))\r")
        await term.expect("cookie-7")
        await term.close()

    asyncio.run(scenario())
    bearer.post(f"/api/instances/{iid}/action", json={"action": "stop"})

    async def stopped() -> None:
        assert await status_of(ws_url(base, iid, bearer.headers["Authorization"][7:])) == 409

    asyncio.run(stopped())
    bearer.delete(f"/api/instances/{iid}")


def test_token_is_masked_in_access_logs(
    bearer: httpx.Client, token: str, caplog: pytest.LogCaptureFixture
) -> None:
    iid = create_shell(bearer)["id"]
    for name in ("uvicorn.error", "uvicorn.access"):
        caplog.set_level(logging.INFO, logger=name)

    async def scenario() -> None:
        term = await Terminal.open(ws_url(str(bearer.base_url), iid, token))
        await term.send("echo masked-$((1+2))\r")
        await term.expect("masked-3")
        await term.close()

    asyncio.run(scenario())
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "/terminal" in text
    assert token not in text
    assert token[8:20] not in text
    bearer.delete(f"/api/instances/{iid}")
