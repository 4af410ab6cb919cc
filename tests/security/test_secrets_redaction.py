"""Secrets stay out of an instance's log, even when the agent prints them.

The model API key and the guest secret are redacted from every record the guest writes: the
agent's output (whole, in two writes with a pause between them, with a colour code in the
middle), what a user types into the terminal, install output and the error an install failure
leaves in health.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from gentity.settings import Settings
from tests.conftest import LiveServer
from tests.fake_agents import create_claude, seed_fake_claude
from tests.guest.conftest import GuestProc, anyio_backend, guest_factory

__all__ = ["anyio_backend", "guest_factory"]  # the guest tests' fixtures, used here too
from tests.server.terminal_client import Terminal, ws_url
from tests.waiting import wait_until

KEY = "sk-ant-redact-canary-5b0d7e2a91c4"
GUEST_SECRET = "guest-secret-canary-8e1f4c7a02b3d6"
MARKER = "[redacted]"


def prints_in_pieces(expr: str, cut: int) -> str:
    """A shell line that prints ``expr``'s value in two writes, a second apart."""
    return (
        f"printf 'split=%s' \"${{{expr}:0:{cut}}}\"; sleep 1; printf '%s\\n' \"${{{expr}:{cut}}}\""
    )


FAKE_CLAUDE = f"""#!/bin/bash
# Stands in for an agent that echoes the key it was given (as Codex does).
echo "the key is $ANTHROPIC_API_KEY"
{prints_in_pieces("ANTHROPIC_API_KEY", 10)}
printf 'coloured=%s\\033[1m%s\\033[0m\\n' "${{ANTHROPIC_API_KEY:0:12}}" "${{ANTHROPIC_API_KEY:12}}"
echo "agent-done"
exec bash --norc -i
"""


def assert_clean(text: str, *secrets: str) -> None:
    """No copy of a secret, nor of a large piece of one, in ``text``."""
    for secret in secrets:
        assert secret not in text
        half = len(secret) // 2
        assert secret[:half] not in text, f"the first half of {secret[:4]}… is in the log"
        assert secret[half:] not in text, f"the second half of {secret[:4]}… is in the log"


def log_messages(text: str) -> list[str]:
    """The messages of a log file's records."""
    return [json.loads(line)["message"] for line in text.splitlines()]


def redacted_pieces(messages: list[str], label: str) -> int:
    """How often ``label`` is followed by a redacted value, in one record or in the next.

    A pause after ``label`` flushes it as a record of its own (the log shows prompts that
    way); the start of the key that followed it is held back until the rest arrives. The
    guest's own "agent ready" record may come in between: the pause also made it ready.
    """
    messages = [m for m in messages if m != "agent ready"]
    return sum(
        1
        for i, m in enumerate(messages)
        if m.endswith(label + MARKER)
        or (m.endswith(label) and messages[i + 1 : i + 2] in ([MARKER], [f"install: {MARKER}"]))
    )


# --- through a real instance ---------------------------------------------------------------


def read_guest_secret(settings: Settings, iid: str) -> str:
    from gentity.server.db.database import Database
    from gentity.server.db.orm import Instance
    from gentity.server.security.crypto import SecretBox

    async def read() -> str:
        db = Database(settings.resolved_database_url)
        try:
            async with db.session() as session:
                row = (await session.scalars(select(Instance).where(Instance.id == iid))).one()
            box = SecretBox.from_settings(settings.secret_key, settings.data_dir)
            return box.decrypt(row.guest_secret_ciphertext, context=iid)
        finally:
            await db.close()

    return asyncio.run(read())


def wait_for_log(client: httpx.Client, iid: str, text: str, timeout: float = 20) -> str:
    deadline = time.monotonic() + timeout
    while True:
        response = client.get(f"/api/instances/{iid}/logs", params={"lines": 1000})
        assert response.status_code == 200, response.text
        if text in response.text:
            return response.text
        assert time.monotonic() < deadline, f"{text!r} not in the log: {response.text}"
        time.sleep(0.2)


def test_an_instance_log_holds_neither_the_key_nor_the_guest_secret(
    bearer: httpx.Client, token: str, settings: Settings
) -> None:
    seed_fake_claude(settings, FAKE_CLAUDE)
    created = create_claude(bearer, KEY)
    assert created.status_code == 200, created.text
    iid = created.json()["id"]
    secret = read_guest_secret(settings, iid)

    async def type_secrets() -> str:
        # A user pastes both into the agent's terminal: the echo and the output are logged.
        term = await Terminal.open(ws_url(str(bearer.base_url), iid, token))
        try:
            await term.expect("agent-done")
            await term.send(f"echo typed={secret}; echo typed-key=$ANTHROPIC_API_KEY\r")
            # Quoted so that the echo of the command line cannot pass for its output.
            await term.send(f"{prints_in_pieces('ANTHROPIC_API_KEY', 3)}; echo typed-do''ne\r")
            return await term.expect("typed-done\r\n")
        finally:
            await term.close()

    terminal_output = asyncio.run(type_secrets())
    assert KEY in terminal_output  # the terminal shows what the agent printed, as it is
    api_text = wait_for_log(bearer, iid, "typed-done")
    log_files = list(settings.data_dir.rglob("agent.log"))
    assert log_files
    file_text = "".join(path.read_text() for path in log_files)
    for text in (api_text, file_text):
        assert_clean(text, KEY, secret)
    api_messages = [r["message"] for r in json.loads(api_text)["logs"]]
    file_messages = log_messages(file_text)
    assert api_messages == file_messages
    assert "the key is [redacted]" in api_messages
    assert "coloured=[redacted]" in api_messages
    assert f"typed={MARKER}" in api_messages
    assert f"typed-key={MARKER}" in api_messages
    assert redacted_pieces(api_messages, "split=") == 2, "\n".join(api_messages)
    # Following the log gives the same records.
    with bearer.stream(
        "GET", f"/api/instances/{iid}/logs", params={"follow": 1, "lines": 1000}
    ) as stream:
        followed = ""
        for chunk in stream.iter_text():
            followed += chunk
            if "typed-done" in followed:
                break
    assert_clean(followed, KEY, secret)
    assert bearer.delete(f"/api/instances/{iid}").status_code == 200


def processes_holding(*values: str) -> dict[int, tuple[str, set[str]]]:
    """Every process on the host whose argv or environment holds one of ``values``:
    pid -> (argv, which of the values)."""
    found: dict[int, tuple[str, set[str]]] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes()
            env = (proc / "environ").read_bytes()
        except OSError:
            continue  # gone meanwhile
        held = {v for v in values if v.encode() in argv or v.encode() in env}
        if held:
            found[int(proc.name)] = (argv.replace(b"\0", b" ").decode(errors="replace"), held)
    return found


def test_secrets_reach_the_guest_only_over_its_socket(
    server: LiveServer, bearer: httpx.Client, token: str, settings: Settings
) -> None:
    """Neither the guest secret nor the model key is in the guest's argv or environment (nor
    its launchers'), nor in any file the provider writes: they travel in ``configure`` only."""
    seed_fake_claude(settings, FAKE_CLAUDE)
    created = create_claude(bearer, KEY)
    assert created.status_code == 200, created.text
    iid = created.json()["id"]
    secret = read_guest_secret(settings, iid)
    wait_for_log(bearer, iid, "agent-done")

    holders = processes_holding(KEY, secret)
    # The agent needs its key in its environment; nothing else has either secret.
    assert holders, "the agent should hold its key"
    for argv, held in holders.values():
        assert held == {KEY}, f"{argv!r} holds the guest secret"
        assert "gentity.guest" not in argv and "bwrap" not in argv, argv
        assert KEY not in argv
    provider = server.app.state.ctx.providers.default
    written = [settings.data_dir, provider.runtime_dir]
    files = [f for top in written for f in top.rglob("*") if f.is_file() and not f.is_symlink()]
    assert any(f.name == "agent.log" for f in files)
    for path in files:
        data = path.read_bytes()
        assert KEY.encode() not in data and secret.encode() not in data, path
    assert bearer.delete(f"/api/instances/{iid}").status_code == 200


# --- the guest on its own ------------------------------------------------------------------


def agent_script(*lines: str) -> list[str]:
    return ["bash", "--norc", "--noprofile", "-c", "\n".join([*lines, "echo agent-done; sleep 60"])]


async def wait_for_text(guest: GuestProc, text: str, timeout: float = 15) -> str:
    deadline = time.monotonic() + timeout
    while text not in (log := guest.log_text()):
        assert time.monotonic() < deadline, f"{text!r} not in the log: {log}"
        await asyncio.sleep(0.05)
    return log


def guest_config(tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "secret": GUEST_SECRET,
        "env": {"PS1": "$ ", "HOME": str(tmp_path), "MODEL_KEY": KEY, "SHORT": "abc123"},
        "secretEnv": ["MODEL_KEY", "SHORT", "NOT_SET"],
        "restart": "never",
    }
    config.update(overrides)
    return config


@pytest.mark.anyio
async def test_guest_redacts_the_agents_output(guest_factory: Any, tmp_path: Path) -> None:
    guest: GuestProc = guest_factory(
        **guest_config(
            tmp_path,
            command=agent_script(
                'echo "key: $MODEL_KEY"',
                f"echo secret: {GUEST_SECRET}",
                prints_in_pieces("MODEL_KEY", 6),
                prints_in_pieces("MODEL_KEY", 1),
                f"printf 'gs={GUEST_SECRET[:4]}'; sleep 1; echo {GUEST_SECRET[4:]}",
                'printf \'esc=%s\\033[32m%s\\n\' "${MODEL_KEY:0:9}" "${MODEL_KEY:9}"',
                'echo "twice: $MODEL_KEY$MODEL_KEY"',
                'echo "short: $SHORT"',
            ),
        )
    )
    log = await wait_for_text(guest, "agent-done")
    assert "key: [redacted]" in log
    assert "secret: [redacted]" in log
    messages = log_messages(log)
    assert redacted_pieces(messages, "split=") == 2, messages
    assert redacted_pieces(messages, "gs=") == 1, messages
    assert "esc=[redacted]" in log
    assert "twice: [redacted][redacted]" in log
    assert "short: abc123" in log  # too short to mean anything: left alone
    assert_clean(log, KEY, GUEST_SECRET)


@pytest.mark.anyio
async def test_guest_redacts_install_output_and_the_error_it_leaves(
    guest_factory: Any, tmp_path: Path
) -> None:
    install = {
        "lockFile": str(tmp_path / "install" / "lock"),
        "marker": str(tmp_path / "install" / "done"),
        "commands": [
            [
                "bash",
                "-c",
                'echo "installing with $INSTALL_KEY"; ' + prints_in_pieces("INSTALL_KEY", 5),
            ],
            ["bash", "-c", 'echo "bad key $INSTALL_KEY"; exit 3'],
        ],
        "env": {"INSTALL_KEY": KEY},
    }
    config = guest_config(tmp_path, install=install, secretEnv=["INSTALL_KEY"])
    guest: GuestProc = guest_factory(**config)
    info = await guest.wait_for(lambda h: h["state"] == "error")
    assert info["error"] == "install failed: bash exited with code 3: bad key [redacted]"
    log = guest.log_text()
    assert "install: installing with [redacted]" in log
    assert redacted_pieces(log_messages(log), "install: split=") == 1, log
    assert_clean(log, KEY, GUEST_SECRET)


# --- the pieces ----------------------------------------------------------------------------


def test_redactor_replaces_exact_values_of_a_useful_length() -> None:
    from gentity.guest.redact import Redactor

    redact = Redactor([KEY, "1", "", "short", KEY + "-longer"])
    assert not Redactor(["1", "abc"])
    assert redact(f"a {KEY} b {KEY}-longer c") == "a [redacted] b [redacted] c"
    assert redact("1 short") == "1 short"
    assert redact.unsafe_tail(f"x {KEY[:5]}") == 5
    assert redact.unsafe_tail("x s") == 1
    assert Redactor([KEY]).unsafe_tail(f"x {KEY}") == 0  # whole: redacted, nothing to hold
    assert redact.unsafe_tail("nothing here") == 0


@pytest.mark.anyio
async def test_line_logger_holds_what_may_start_a_secret() -> None:
    from gentity.guest.redact import Redactor
    from gentity.guest.textlines import LineLogger

    lines: list[str] = []
    logger = LineLogger(lines.append, quiet=0.05, max_line=64, redact=Redactor([KEY]))
    logger.feed(f"key={KEY[:7]}".encode())
    await wait_until(lambda: lines != [], "the quiet period flushes the line")
    assert lines == ["key="]  # the quiet flush keeps back the start of the key
    logger.feed(f"{KEY[7:]} end\n".encode())
    assert lines == ["key=", "[redacted] end"]
    # A line longer than max_line is cut, but never inside a key.
    logger.feed(("x" * 50 + KEY + "y" * 60 + "\n").encode())
    assert KEY not in "".join(lines) and "[redacted]" in lines[-2]
    flushed = len(lines)
    logger.feed(b"prompt s")
    await wait_until(lambda: len(lines) > flushed, "the quiet period flushes the prompt")
    assert lines[-1] == "prompt"
    logger.close()
    assert lines[-1] == "s"


def test_log_writer_redacts_every_record(tmp_path: Path) -> None:
    from gentity.guest.logreader import tail
    from gentity.guest.logwriter import LogWriter
    from gentity.guest.redact import Redactor

    path = tmp_path / "agent.log"
    with LogWriter(path, redact=Redactor([KEY, GUEST_SECRET])) as log:
        log.write("error", f'failed: "{KEY}"')
        log.write_lines("info", [f"a {GUEST_SECRET}", "plain"])
    assert [r["message"] for r in tail(path, 10)] == [
        'failed: "[redacted]"',
        "a [redacted]",
        "plain",
    ]
    assert_clean(path.read_text(), KEY, GUEST_SECRET)
