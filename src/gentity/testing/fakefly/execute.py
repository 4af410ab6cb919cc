"""``exec`` in a fake machine: a command run inside its namespaces, its output returned whole.

The command enters the machine's mount, PID, network, IPC and UTS namespaces with nsenter and
drops every capability with setpriv first, so it sees and can do what the machine's own
processes can, no more.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal

from gentity.testing.fakefly.runner import Sandbox


async def run_in(
    sandbox: Sandbox, command: list[str], env: dict[str, str], stdin: str, limit: float
) -> tuple[int, int, str, str]:
    """(exit code, exit signal, stdout, stderr) of ``command``; killed after ``limit`` seconds
    (reported as SIGKILL, the way a process killed by Fly's timeout would be)."""
    argv = [
        "nsenter",
        f"--target={sandbox.init_pid}",
        "--mount",
        "--pid",
        "--net",
        "--ipc",
        "--uts",
        "--root",
        "--wd",
        "--",
        "setpriv",
        "--bounding-set=-all",
        "--inh-caps=-all",
        "--",
        *command,
    ]
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        start_new_session=True,  # one process group, inside the namespace too: killed together
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(stdin.encode()), limit)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        out, err = await process.communicate()
        return 137, int(signal.SIGKILL), out.decode(errors="replace"), err.decode(errors="replace")
    code = process.returncode or 0
    exit_signal = -code if code < 0 else 0
    exit_code = 128 + exit_signal if exit_signal else code
    return exit_code, exit_signal, out.decode(errors="replace"), err.decode(errors="replace")
