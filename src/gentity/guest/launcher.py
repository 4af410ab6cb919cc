"""Starting the guest's programs: the agent and the private shells on terminals, and the
commands of ``exec`` on pipes.

All start alike: in the instance's working directory, in the children's cgroup, with the
daemon's environment plus their own. Standard library only.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable

from gentity.guest.children import ChildWatcher, StartError, resolve
from gentity.guest.execute import Execution, Send
from gentity.guest.session import PtySession
from gentity.guest.textlines import LineLogger


class Launcher:
    """Starts :class:`PtySession` programs and notes when any of them was last active."""

    def __init__(self, *, workdir: str, watcher: ChildWatcher, cgroup_fd: int | None) -> None:
        self._workdir = workdir
        self._watcher = watcher
        self._cgroup_fd = cgroup_fd
        self.last_activity: float | None = None
        """When a started program last read input or printed output (Unix time)."""

    def start(
        self,
        argv: list[str],
        extra_env: dict[str, str],
        cols: int,
        rows: int,
        replay_bytes: int = 0,
        logger: LineLogger | None = None,
        on_output: Callable[[bytes], None] | None = None,
    ) -> PtySession:
        """Start ``argv`` on a new terminal. Raises StartError, in plain words, if it cannot."""
        # The child env is built per spawn and not kept: PtySession drops it too.
        env = {**os.environ, **extra_env}
        env.setdefault("TERM", "xterm-256color")
        exe = resolve(argv[0], env, self._workdir)
        session = PtySession(
            argv,
            executable=exe,
            cwd=self._workdir,
            env=env,
            cols=cols,
            rows=rows,
            watcher=self._watcher,
            cgroup_fd=self._cgroup_fd,
            replay_bytes=replay_bytes,
            logger=logger,
            on_activity=self.touch,
            on_output=on_output,
        )
        try:
            session.start()
        except (OSError, subprocess.SubprocessError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise StartError(f"{argv[0]}: {reason.lower()}") from None
        return session

    def touch(self) -> None:
        """Note activity now: a started program's input or output, or work a client asked of
        the guest beside the agent (what auto-stop counts as use)."""
        self.last_activity = time.time()

    def start_exec(
        self,
        argv: list[str],
        extra_env: dict[str, str],
        *,
        cwd: str,
        timeout: float,
        max_output: int,
        send: Send,
    ) -> Execution:
        """Start ``argv`` on pipes in ``cwd`` (see :mod:`gentity.guest.execute`). Raises
        StartError, in plain words, if it cannot."""
        env = {**os.environ, **extra_env}
        exe = resolve(argv[0], env, cwd)
        execution = Execution(
            argv,
            executable=exe,
            cwd=cwd,
            env=env,
            watcher=self._watcher,
            cgroup_fd=self._cgroup_fd,
            timeout=timeout,
            max_output=max_output,
            send=send,
            on_activity=self.touch,
        )
        try:
            execution.start()
        except (OSError, subprocess.SubprocessError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise StartError(f"{argv[0]}: {reason.lower()}") from None
        return execution
