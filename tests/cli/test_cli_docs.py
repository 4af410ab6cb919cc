"""The CLI stays documented: every command and option is in docs/cli.md, and has help."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from typer.core import TyperGroup, TyperOption
from typer.main import get_command

from gentity.cli.main import app

DOC = Path(__file__).resolve().parents[2] / "docs" / "cli.md"
TYPER_OWN = ("--help", "--install-completion", "--show-completion")


def walk(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, Any]]:
    """Every command under ``command`` with its full name: ("gentity compute ssh", <cmd>)."""
    yield " ".join(("gentity", *path)), command
    if isinstance(command, TyperGroup):
        for sub_name, sub in command.commands.items():
            yield from walk(sub, (*path, sub_name))


def commands() -> list[tuple[str, Any]]:
    return list(walk(get_command(app)))


def options(command: Any) -> list[TyperOption]:
    return [p for p in command.params if isinstance(p, TyperOption)]


def test_the_walk_sees_the_whole_tree() -> None:
    names = {name for name, _ in commands()}
    assert {"gentity login", "gentity compute ssh", "gentity tokens revoke", "gentity serve"} <= (
        names
    )
    assert len(names) > 20


def test_every_command_is_documented() -> None:
    doc = DOC.read_text()
    missing = [name for name, _ in commands() if f"`{name}" not in doc]
    assert missing == [], f"commands missing from docs/cli.md: {missing}"


def test_every_option_is_documented() -> None:
    doc = DOC.read_text()
    missing = [
        f"{name} {opt}"
        for name, command in commands()
        for option in options(command)
        for opt in option.opts
        if opt.startswith("--") and opt not in TYPER_OWN and f"`{opt}" not in doc
    ]
    assert missing == [], f"options missing from docs/cli.md: {missing}"


def test_every_command_and_option_has_help() -> None:
    for name, command in commands():
        assert (command.help or "").strip(), f"{name} has no help"
        for option in options(command):
            assert (option.help or "").strip(), f"{name} {option.opts} has no help"
