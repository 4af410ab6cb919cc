"""``gentity compute``: create, list, drive, watch and enter instances."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable, Iterator
from typing import Annotated

import typer
from rich.text import Text

from gentity import models
from gentity.cli import completion, events, files, ports, watch
from gentity.cli.apikeys import read_api_key
from gentity.cli.output import (
    PLAIN_HELP,
    Cell,
    JsonFlag,
    fail,
    fields,
    note,
    print_json,
    spinner,
    status,
    table,
    when,
)
from gentity.cli.resolve import find_instance, instance_gone
from gentity.client import ApiError, Client, ExecOutput
from gentity.client.calls import CREATE_TIMEOUT

app = typer.Typer(
    rich_markup_mode=PLAIN_HELP,
    help="Create, list, start, stop, watch and enter instances.",
    no_args_is_help=True,
)

InstanceId = Annotated[
    str,
    typer.Argument(
        metavar="ID",
        help="The instance: its id, a unique start of it, or its name (see: gentity compute ls).",
        autocompletion=completion.instance_refs,
    ),
]

LEVEL_COLORS = {"error": "red", "warn": "yellow", "debug": "bright_black"}
AGENT_STYLES = {
    models.AgentState.READY: "green",
    models.AgentState.STARTING: "yellow",
    models.AgentState.INSTALLING: "yellow",
    models.AgentState.BACKOFF: "red",
    models.AgentState.CRASHED: "red",
    models.AgentState.EXITED: "bright_black",
}


@app.command("create")
def create(
    agent: Annotated[
        str,
        typer.Option(
            help="Agent to run (see: gentity catalog).", autocompletion=completion.agent_ids
        ),
    ],
    model: Annotated[
        str | None, typer.Option(help="Model name (default: the agent's first model).")
    ] = None,
    provider: Annotated[
        str | None,
        typer.Option(help="Model provider, when the model name alone is ambiguous."),
    ] = None,
    name: Annotated[str | None, typer.Option(help="A label for the instance.")] = None,
    region: Annotated[str | None, typer.Option(help="Where to run it (provider-specific).")] = None,
    env: Annotated[
        list[str] | None,
        typer.Option(
            "--env",
            help="NAME to pass your NAME through, or NAME=VALUE; repeatable. Kept encrypted.",
        ),
    ] = None,
    repo: Annotated[
        str | None, typer.Option(help="An https git URL to clone into the working directory.")
    ] = None,
    auto_stop: Annotated[
        int | None,
        typer.Option(
            "--auto-stop",
            metavar="MINUTES",
            min=0,
            max=models.MAX_AUTO_STOP_MINUTES,
            help="Stop it after this many minutes without activity; 0 never (default: the "
            "server's setting).",
        ),
    ] = None,
    restart_policy: Annotated[
        models.RestartPolicy,
        typer.Option(
            "--restart-policy",
            help="Restart the agent and a dead machine: always, on-failure or never.",
        ),
    ] = models.RestartPolicy.ALWAYS,
    as_json: JsonFlag = False,
) -> None:
    """Create an instance and wait until it runs, showing its log as it starts.

    The id is printed as soon as the instance exists, then the install and start lines of its
    log, until it runs or fails. The model API key is read from the provider's usual variable
    (ANTHROPIC_API_KEY, OPENAI_API_KEY, GEMINI_API_KEY) or prompted for without echo; it is
    never an option.
    """
    with Client() as client:
        found = next((a for a in client.catalog() if a.id == agent), None)
        if found is None:
            fail(f"unknown agent {agent!r}; see: gentity catalog")
        chosen = _pick_model(found, model, provider)
        api_key = read_api_key(found, chosen)
        extra_env = _parse_env(env or [])
    request = watch.CreateRequest(
        found,
        chosen,
        api_key,
        name,
        region,
        extra_env or None,
        repo,
        auto_stop,
        restart_policy.value,
    )
    try:
        created, instance = watch.create_and_watch(request)
    except KeyboardInterrupt:
        note("Stopped watching; the instance goes on starting (see: gentity compute ls).")
        raise typer.Exit(130) from None
    except watch.StillStarting as exc:
        minutes = CREATE_TIMEOUT / 60
        fail(
            f"{exc.created.id} had not started after {minutes:.0f} minutes, the server's limit; "
            f"see: gentity compute logs {exc.created.id}"
        )
    if instance.status is not models.InstanceStatus.RUNNING:
        why = instance.error_message or f"it is {instance.status.value}"
        fail(f"{_label(instance)} did not start: {why}")
    created = created.model_copy(update={"status": instance.status})
    if as_json:
        print_json(created)
        return
    typer.echo(f"Created {created.id} ({created.subdomain}), {created.status.value}.")
    note(f"Open its terminal with: gentity compute ssh {created.id}")


def _parse_env(items: list[str]) -> dict[str, str]:
    """``NAME`` takes the value of ``NAME`` here (so a secret stays out of the command line and
    the process list); ``NAME=VALUE`` gives it. The server checks the names."""
    env: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not name:
            fail(f"--env {item!r}: expected NAME or NAME=VALUE")
        if not sep:
            if name not in os.environ:
                fail(f"--env {name}: {name} is not set here (give NAME=VALUE, or set it)")
            value = os.environ[name]
        env[name] = value
    return env


def _pick_model(agent: models.Agent, name: str | None, provider: str | None) -> models.AgentModel:
    candidates = [
        m
        for m in agent.models
        if (name is None or m.name == name) and (provider is None or m.provider == provider)
    ]
    if candidates:
        return candidates[0]
    if name is not None and provider is not None:
        # Not in the catalog we see: let the server judge (it answers 400 naming the field).
        return models.AgentModel(provider=provider, name=name, label=name)
    wanted = "/".join(p for p in (provider, name) if p)
    offered = ", ".join(f"{m.provider}/{m.name}" for m in agent.models)
    fail(f"{agent.id} has no model {wanted}; choose from: {offered}")


@app.command("ls")
def list_instances(as_json: JsonFlag = False) -> None:
    """List your instances."""
    with Client() as client:
        instances = client.instances.list()
    if as_json:
        print_json({"instances": instances})
        return
    if not instances:
        note("No instances yet. Create one with: gentity compute create --agent shell")
        return
    table(
        ["ID", "NAME", "AGENT", "MODEL", "STATUS", "HEALTH", "CREATED", "AUTO-STOP"],
        (
            (
                i.id,
                i.name,
                i.agent_type,
                f"{i.model_provider}/{i.model_name}",
                status(i.status.value),
                _health(i),
                when(i.created_at),
                when(i.auto_stop_at),
            )
            for i in instances
        ),
    )


def _health(instance: models.Instance) -> Text | str:
    """The agent's state, with its restarts when it has any; "-" unless it runs."""
    agent = instance.agent
    if agent is None:
        return "unknown" if instance.status is models.InstanceStatus.RUNNING else "-"
    text = agent.state.value
    if agent.restarts:
        text += f" ({agent.restarts} restarts)"
    return Text(text, style=AGENT_STYLES.get(agent.state, ""))


def _agent_fields(instance: models.Instance) -> list[tuple[str, Cell]]:
    agent = instance.agent
    if agent is None:
        return [("Agent state", _health(instance))]
    last_exit = "-"
    if agent.last_exit_code is not None:
        last_exit = f"code {agent.last_exit_code}"
        if agent.last_exit_at is not None:
            last_exit += f", {when(agent.last_exit_at)}"
    return [
        ("Agent state", _health(instance)),
        ("Restarts", str(agent.restarts)),
        ("Last exit", last_exit),
        ("Ready since", when(agent.ready_at) if agent.ready_at else "-"),
    ]


def _auto_stop(instance: models.Instance) -> str:
    """When it stops if it stays idle, after how long; "never" when auto-stop is off."""
    minutes = instance.auto_stop_minutes
    if minutes <= 0:
        return "never"
    after = f"after {minutes} min idle"
    return f"{when(instance.auto_stop_at)} ({after})" if instance.auto_stop_at else after


@app.command("show")
def show(instance_id: InstanceId, as_json: JsonFlag = False) -> None:
    """Show one instance."""
    with Client() as client:
        found = find_instance(client, instance_id)
        with instance_gone(instance_id):
            instance = client.instances.get(found.id)
    if as_json:
        print_json(instance)
        return
    fields(
        [
            ("ID", instance.id),
            ("Name", instance.name),
            ("Status", status(instance.status.value)),
            *([("Error", instance.error_message)] if instance.error_message else []),
            ("Agent", instance.agent_type),
            *_agent_fields(instance),
            ("Model", f"{instance.model_provider}/{instance.model_name}"),
            ("Subdomain", instance.subdomain),
            ("Region", instance.region or "-"),
            ("Auto-stop", _auto_stop(instance)),
            ("Restart policy", instance.restart_policy.value),
            ("Created", when(instance.created_at)),
            ("Updated", when(instance.updated_at)),
        ]
    )


@app.command("start")
def start(instance_id: InstanceId, as_json: JsonFlag = False) -> None:
    """Start a stopped instance (its volume is kept)."""
    _drive("Starting", "Started", instance_id, as_json, lambda c, i: c.instances.start(i))


@app.command("stop")
def stop(instance_id: InstanceId, as_json: JsonFlag = False) -> None:
    """Stop an instance, keeping its volume."""
    _drive("Stopping", "Stopped", instance_id, as_json, lambda c, i: c.instances.stop(i))


@app.command("restart")
def restart(instance_id: InstanceId, as_json: JsonFlag = False) -> None:
    """Restart an instance."""
    _drive("Restarting", "Restarted", instance_id, as_json, lambda c, i: c.instances.restart(i))


@app.command("rm")
def remove(
    instance_id: InstanceId,
    yes: Annotated[bool, typer.Option("-y", "--yes", help="Do not ask for confirmation.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Destroy an instance and its volume, for good."""

    def confirm(instance: models.Instance) -> None:
        if yes:
            return
        if not sys.stdin.isatty():
            fail("refusing to destroy without confirmation; pass -y")
        typer.confirm(f"Destroy {_label(instance)} and its volume?", abort=True)

    _drive(
        "Destroying",
        "Destroyed",
        instance_id,
        as_json,
        lambda c, i: c.instances.delete(i),
        before=confirm,
    )


def _drive(
    verb: str,
    done: str,
    ref: str,
    as_json: bool,
    call: Callable[[Client, str], None],
    before: Callable[[models.Instance], None] | None = None,
) -> None:
    with Client() as client:
        instance = find_instance(client, ref)
        if before is not None:
            before(instance)
        with spinner(f"{verb} {_label(instance)}…"), instance_gone(ref):
            call(client, instance.id)
    if as_json:
        print_json({"ok": True})
    else:
        typer.echo(f"{done} {_label(instance)}.")


def _label(instance: models.Instance) -> str:
    """How messages name an instance: its id, and its name, which people remember."""
    return f"{instance.id} ({instance.name})"


@app.command("logs")
def logs(
    instance_id: InstanceId,
    lines: Annotated[
        int, typer.Option("-n", "--lines", help="How many recent lines (1-1000).")
    ] = 200,
    follow: Annotated[
        bool, typer.Option("-f", "--follow", help="Keep printing new lines; Ctrl-C stops.")
    ] = False,
    as_json: Annotated[
        bool,
        typer.Option("--json", help='Print JSON: {"logs": [...]}, or one object per line with -f.'),
    ] = False,
) -> None:
    """Print an instance's recent log lines, or follow them as they are written."""
    color = sys.stdout.isatty() and not as_json
    with Client() as client:
        instance = find_instance(client, instance_id)
        if not follow:
            with instance_gone(instance_id):
                records = client.instances.logs(instance.id, lines)
            if as_json:
                print_json({"logs": records})
                return
            for record in records:
                _print_log(record, color, as_json=False)
            return
        try:
            with instance_gone(instance_id):
                for record in client.instances.follow_logs(instance.id, lines=lines):
                    _print_log(record, color, as_json)
        except KeyboardInterrupt:
            raise typer.Exit(130) from None
        # The SDK ends a followed stream only when the instance answers 404 on a reconnect;
        # ask once more so the last line says what happened rather than stopping silently.
        note(_why_the_stream_ended(client, instance))


def _why_the_stream_ended(client: Client, instance: models.Instance) -> str:
    try:
        now = client.instances.get(instance.id)
    except ApiError as exc:
        if exc.status != 404:
            raise
        return f"instance {_label(instance)} was destroyed"
    return f"the log stream of {_label(instance)} ended ({now.status.value})"


def _print_log(record: models.LogLine, color: bool, as_json: bool) -> None:
    if as_json:
        print_json(record, indent=None)
        return
    level = f"{record.level.upper():5}"
    if color and record.level in LEVEL_COLORS:
        level = typer.style(level, fg=LEVEL_COLORS[record.level])
    typer.echo(f"{record.timestamp} {level} {record.message}")


app.command("events")(events.events)
app.command("ports")(ports.ports)
app.command("open")(ports.open_url)
app.command("cp")(files.cp)
app.command("ls-files")(files.ls_files)
app.command("rm-file")(files.rm_file)


@app.command("exec")
def exec_command(
    instance_id: InstanceId,
    command: Annotated[
        list[str],
        typer.Argument(
            metavar="CMD", help="The program and its arguments, after -- (no shell: sh -c '...')."
        ),
    ],
    timeout: Annotated[
        float | None,
        typer.Option(
            help="Seconds before it and everything it started are killed (default 60, max 3600)."
        ),
    ] = None,
    cwd: Annotated[
        str | None,
        typer.Option(
            help="Where it runs: relative to the agent's working directory (the default), "
            "or absolute."
        ),
    ] = None,
    env: Annotated[
        list[str] | None,
        typer.Option(
            "-e",
            "--env",
            help="NAME=VALUE added to the agent's environment, or NAME to pass yours; repeatable.",
        ),
    ] = None,
) -> None:
    """Run a command in a running instance, beside its agent (not in its terminal).

    Its stdout and stderr arrive here apart, as they are written, and its exit code is this
    command's (a signal gives 128+n). Piped input is its stdin:
    echo hi | gentity compute exec ID -- sh -c 'cat; ls -l'
    """
    extra_env = _parse_env(env or [])
    stdin = None
    if not sys.stdin.isatty():
        stdin = sys.stdin.buffer.read().decode(errors="replace")
    with Client() as client:
        found = find_instance(client, instance_id)
        with instance_gone(instance_id):
            stream = client.instances.exec_stream(
                found.id, command, cwd=cwd, env=extra_env or None, stdin=stdin, timeout=timeout
            )
        try:
            end = _copy_output(stream)
        except KeyboardInterrupt:
            raise typer.Exit(130) from None  # leaving closes the stream: the command is killed
    if end.timed_out:
        note(f"the command ran past its timeout ({timeout or 60:g} s) and was killed")
    for name, cut in (("stdout", end.stdout_truncated), ("stderr", end.stderr_truncated)):
        if cut:
            note(f"its {name} was cut at 1 MiB")
    raise typer.Exit(_exit_status(end))


def _copy_output(stream: Iterator[ExecOutput | models.ExecExit]) -> models.ExecExit:
    try:
        for item in stream:
            if isinstance(item, models.ExecExit):
                return item
            out = sys.stdout if item.stream == "stdout" else sys.stderr
            out.buffer.write(item.data.encode())
            out.buffer.flush()
    finally:
        close = getattr(stream, "close", None)
        if close is not None:
            close()
    fail("the command's output ended before it did")


def _exit_status(end: models.ExecExit) -> int:
    """The exit code, or 128 + the signal's number, as a shell reports a killed command."""
    if end.exit_code is not None:
        return end.exit_code
    name = end.signal or ""
    try:
        return 128 + signal.Signals[name].value
    except KeyError:
        number = name.removeprefix("SIG")
        return 128 + int(number) if number.isdigit() and int(number) < 128 else 255


@app.command("ssh")
def ssh(
    instance_id: InstanceId,
    shell: Annotated[
        bool,
        typer.Option("--shell", help="Open a fresh shell instead of joining the agent's session."),
    ] = False,
    eof_timeout: Annotated[
        float,
        typer.Option(
            help="With piped input: after it ends, wait this many quiet seconds for the "
            "remote side to exit before disconnecting.",
        ),
    ] = 5.0,
) -> None:
    """Open the instance's terminal here; exits with the remote exit code.

    Joins the agent's session (shared with the dashboard; leaving keeps it running).
    Ctrl-] disconnects. Piped input works too: echo 'ls; exit 3' | gentity compute ssh ID
    """
    from gentity.cli.ssh import run  # loads asyncio and websockets only for this command

    with Client() as client:
        found = find_instance(client, instance_id)
    raise typer.Exit(run(found.id, shell=shell, eof_timeout=eof_timeout))
