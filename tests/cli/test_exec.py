"""``gentity compute exec``: output apart and live, exit codes, stdin, options, refusals."""

from __future__ import annotations

import signal
import subprocess

from tests.cli.conftest import Cli


def test_exec_passes_streams_exit_code_and_stdin(logged_in: Cli, shell_instance: str) -> None:
    script = 'cat; echo "err $GREETING" >&2; pwd; exit 4'
    result = logged_in(
        "compute",
        "exec",
        "-e",
        "GREETING=hi",
        "--cwd",
        "/",
        shell_instance,
        "--",
        "sh",
        "-c",
        script,
        stdin="piped in\n",
    )
    assert result.returncode == 4, result.stderr
    assert result.stdout == "piped in\n/\n"
    assert result.stderr == "err hi\n"
    # Options after the id, and a command with options of its own after --.
    listed = logged_in("compute", "exec", shell_instance, "--timeout", "20", "--", "ls", "-a")
    assert listed.returncode == 0 and ".\n" in listed.stdout


def test_exec_signal_timeout_and_truncation(logged_in: Cli, shell_instance: str) -> None:
    killed = logged_in("compute", "exec", shell_instance, "--", "sh", "-c", "kill -TERM $$")
    assert killed.returncode == 128 + signal.SIGTERM
    timed = logged_in(
        "compute", "exec", "--timeout", "1", shell_instance, "--", "sh", "-c", "sleep 30"
    )
    assert timed.returncode == 128 + signal.SIGKILL
    assert "ran past its timeout (1 s)" in timed.stderr
    big = logged_in(
        "compute", "exec", shell_instance, "--", "sh", "-c", "head -c 2000000 /dev/zero"
    )
    assert big.returncode == 0 and len(big.stdout) == 1024 * 1024
    assert "stdout was cut at 1 MiB" in big.stderr


def test_exec_output_is_live(logged_in: Cli, shell_instance: str) -> None:
    # The first line arrives while the command still waits for a file the test makes later.
    proc = subprocess.Popen(
        logged_in.argv(
            "compute",
            "exec",
            shell_instance,
            "--",
            "sh",
            "-c",
            "echo first; while [ ! -e go ]; do sleep 0.05; done; echo second",
        ),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=logged_in.env,
        text=True,
    )
    assert proc.stdout is not None
    try:
        assert proc.stdout.readline() == "first\n"
        assert logged_in("compute", "exec", shell_instance, "--", "touch", "go").returncode == 0
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert out == "second\n"


def test_exec_refusals(logged_in: Cli, shell_instance: str) -> None:
    missing = logged_in("compute", "exec", shell_instance, "--", "no-such-program")
    assert missing.returncode != 0
    assert "no-such-program not found" in missing.stderr
    unknown = logged_in("compute", "exec", "nope", "--", "true")
    assert unknown.returncode != 0 and 'no instance "nope"' in unknown.stderr
    assert logged_in("compute", "stop", shell_instance).returncode == 0
    stopped = logged_in("compute", "exec", shell_instance, "--", "true")
    assert stopped.returncode != 0 and "start it first" in stopped.stderr
