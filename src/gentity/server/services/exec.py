"""Running a command in an instance, beside its agent, through the instance's guest.

The guest runs it on pipes and cuts each stream at the cap; this side holds the guest to the
same cap and to the timeout (with a grace), since whatever an instance sends is untrusted.
"""

from __future__ import annotations

import asyncio
import codecs
from collections.abc import AsyncIterator
from typing import Final, Literal

from gentity import models
from gentity.guest import client as guest_client
from gentity.guest import protocol as p
from gentity.models import InstanceStatus
from gentity.server.context import AppContext
from gentity.server.services import instances
from gentity.server.services.errors import Conflict, InvalidInput, NotFound, UpstreamFailed

#: Past the command's timeout, how long to wait for its guest to report the end.
GUEST_GRACE: Final = 15.0
BUSY_RETRY_AFTER: Final = 5

Stream = Literal["stdout", "stderr"]


class ExecRun:
    """A command started in an instance: read it as events, or all at once."""

    def __init__(self, execution: guest_client.GuestExec, deadline: float) -> None:
        self._execution = execution
        self._deadline = deadline
        self._decoders = {
            name: codecs.getincrementaldecoder("utf-8")(errors="replace")
            for name in ("stdout", "stderr")
        }
        self._seen: dict[Stream, int] = {"stdout": 0, "stderr": 0}

    async def events(self) -> AsyncIterator[tuple[Stream, str] | models.ExecExit]:
        """``(stream, text)`` as output arrives, then one :class:`~gentity.models.ExecExit`.

        Raises UpstreamFailed if the guest goes away first or does not end the command in
        time. Closing the iterator early (a client that left) kills the command.
        """
        try:
            async with asyncio.timeout_at(self._deadline):
                while (event := await self._execution.read()) is not None:
                    if isinstance(event, guest_client.ExecOutput):
                        if text := self._decode(event.stream, event.data):
                            yield event.stream, text
                        continue
                    for name in ("stdout", "stderr"):
                        if tail := self._decoders[name].decode(b"", final=True):
                            yield name, tail
                    yield self._end(event)
                    return
        except TimeoutError:
            raise UpstreamFailed("the instance did not report the end of the command") from None
        except guest_client.GuestError as exc:
            raise UpstreamFailed(f"the command's output broke off: {exc}") from None
        finally:
            await self._execution.close()
        raise UpstreamFailed("the instance went away before the command ended")

    async def collect(self) -> models.ExecResult:
        """Run to the end; everything it printed, with how it ended."""
        out: dict[Stream, list[str]] = {"stdout": [], "stderr": []}
        async for event in self.events():
            if isinstance(event, models.ExecExit):
                return models.ExecResult(
                    **event.model_dump(),
                    stdout="".join(out["stdout"]),
                    stderr="".join(out["stderr"]),
                )
            out[event[0]].append(event[1])
        raise UpstreamFailed("the instance went away before the command ended")  # unreachable

    async def close(self) -> None:
        """Stop reading; a command still running is killed."""
        await self._execution.close()

    def _decode(self, stream: Stream, data: bytes) -> str:
        room = models.EXEC_OUTPUT_CAP - self._seen[stream]
        self._seen[stream] += len(data)
        return self._decoders[stream].decode(data[: max(room, 0)])

    def _end(self, end: p.ExecExit) -> models.ExecExit:
        stdout_cut = end.stdout_truncated or self._seen["stdout"] > models.EXEC_OUTPUT_CAP
        stderr_cut = end.stderr_truncated or self._seen["stderr"] > models.EXEC_OUTPUT_CAP
        return models.ExecExit(
            exit_code=end.exit_code,
            signal=end.signal,
            timed_out=end.timed_out,
            truncated=stdout_cut or stderr_cut,
            stdout_truncated=stdout_cut,
            stderr_truncated=stderr_cut,
        )


async def start(
    ctx: AppContext,
    user_id: str,
    instance_id: str,
    body: models.ExecRequest,
    *,
    scope_instance_id: str | None,
) -> ExecRun:
    """Start ``body``'s command in the caller's running instance and hand it its stdin.

    ``scope_instance_id`` is the one instance the caller's credential is limited to, if any.
    Holds no database session once it returns: a command may run for an hour.
    """
    if scope_instance_id not in (None, instance_id):
        raise NotFound()
    async with ctx.db.session() as db:
        row = await instances.get_owned(db, user_id, instance_id)
    if row.status != InstanceStatus.RUNNING.value:
        raise Conflict(f"the instance is {row.status}; start it first")
    endpoint = instances.provider_for(ctx, row).guest_endpoint(instances.handle_of(row))
    run_timeout = body.timeout or models.DEFAULT_EXEC_TIMEOUT
    deadline = asyncio.get_running_loop().time() + run_timeout + GUEST_GRACE
    try:
        execution = await guest_client.open_exec(
            endpoint,
            instances.guest_secret(ctx, row),
            body.command,
            stdin=(body.stdin or "").encode(errors="replace"),
            cwd=body.cwd,
            env=body.env,
            run_timeout=run_timeout,
            max_output=models.EXEC_OUTPUT_CAP,
        )
    except guest_client.GuestRefused as exc:
        # The guest's address is the provider's business, not the user's.
        message = str(exc).replace(f"guest at {endpoint.address}: ", "")
        if exc.reason == p.REFUSED_INVALID:
            raise InvalidInput(message) from None
        if exc.reason == p.REFUSED_BUSY:
            raise Conflict(message, retry_after=BUSY_RETRY_AFTER) from None
        raise UpstreamFailed(message) from None
    except guest_client.GuestError as exc:
        raise UpstreamFailed(str(exc).replace(f" at {endpoint.address}", "")) from None
    return ExecRun(execution, deadline)
