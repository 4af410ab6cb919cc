"""This provider's operations in flight, so that ``status`` reports them as in progress.

Another server sees a local machine only through its processes and files: half-way through a
start there are none yet, half-way through a stop some are left. The server running the
operation knows better, and says ``starting``, ``stopping`` or ``destroying`` until the machine
is where the operation leads.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar

from gentity.providers.compute.base import MachineHandle, MachineState, MachineStatus

# Where each operation leads: once the machine is there, it is reported as it is.
_LEADS_TO = {
    MachineState.STARTING: MachineState.RUNNING,
    MachineState.STOPPING: MachineState.STOPPED,
    MachineState.DESTROYING: MachineState.MISSING,
}


class InFlight:
    """The operations under way, by machine; the outermost one names the state (a destroy
    stops the machine first, and is still a destroy)."""

    def __init__(self) -> None:
        self._states: dict[str, list[MachineState]] = {}

    @contextlib.contextmanager
    def during(self, ref: str, state: MachineState) -> Iterator[None]:
        states = self._states.setdefault(ref, [])
        states.append(state)
        try:
            yield
        finally:
            states.remove(state)
            if not states:
                del self._states[ref]

    def overlay(self, ref: str, seen: MachineStatus) -> MachineStatus:
        """``seen``, or the operation in flight when the machine is not yet where it leads."""
        states = self._states.get(ref)
        if not states or seen.state is _LEADS_TO[states[0]]:
            return seen
        return MachineStatus(states[0])


class _Tracked(Protocol):
    in_flight: InFlight


T = TypeVar("T", bound=_Tracked)
P = ParamSpec("P")
R = TypeVar("R")


def shows(
    state: MachineState,
) -> Callable[
    [Callable[Concatenate[T, MachineHandle, P], Awaitable[R]]],
    Callable[Concatenate[T, MachineHandle, P], Coroutine[Any, Any, R]],
]:
    """Decorate an operation on a machine: while it runs, the machine is reported as ``state``."""

    def decorate(
        method: Callable[Concatenate[T, MachineHandle, P], Awaitable[R]],
    ) -> Callable[Concatenate[T, MachineHandle, P], Coroutine[Any, Any, R]]:
        async def tracked(
            self: T, handle: MachineHandle, /, *args: P.args, **kwargs: P.kwargs
        ) -> R:
            with self.in_flight.during(handle.ref, state):
                return await method(self, handle, *args, **kwargs)

        functools.update_wrapper(tracked, method)
        return tracked

    return decorate
