"""Every command's ``--help`` reads right: flags show as flags, not as options taking a value."""

from __future__ import annotations

import click

from tests.cli.conftest import Cli
from tests.cli.test_cli_docs import commands, options


def test_flags_show_as_flags_in_every_help() -> None:
    for name, command in commands():
        with click.Context(command, info_name=name) as ctx:
            text = command.get_help(ctx)
        assert "<bool>" not in text, f"{name} --help:\n{text}"
        for option in options(command):
            if option.is_flag:
                line = next(line for line in text.splitlines() if option.opts[-1] in line)
                assert "<" not in line.split("  ")[0], f"{name}: {line}"


def test_help_as_a_user_sees_it(cli: Cli) -> None:
    text = cli("compute", "logs", "--help", env={"COLUMNS": "100"}).stdout
    assert "  --json " in text and "--json <" not in text
    assert "-f, --follow " in text
    assert "-n, --lines <int>" in text  # options that take a value still say what kind
