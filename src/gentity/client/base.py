"""What the sync and async clients share: settings, credentials and reading answers."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

import httpx
from pydantic import ValidationError

from gentity import __version__, models
from gentity.client.calls import Call
from gentity.client.config import load_config, resolve_base_url, resolve_token
from gentity.client.errors import (
    ApiConnectionError,
    ApiError,
    describe_transport_error,
    error_from_response,
)
from gentity.client.sse import Backoff, Event

T = TypeVar("T")
R = TypeVar("R")

USER_AGENT = f"gentity-python/{__version__}"
DEFAULT_TIMEOUT = 30.0
#: The log stream sends a keep-alive comment every 15 s; four missed ones mean a dead link.
STREAM_READ_TIMEOUT = 60.0
#: Statuses worth reconnecting after, once a log stream has been open: a restarting server
#: or a proxy in front of it. Anything else (401, 404…) is final.
RETRY_STATUSES = frozenset({502, 503, 504})
DEFAULT_MAX_RECONNECTS = 10
DEFAULT_RECONNECT_DELAY = 0.5


def resolve(base_url: str | None, token: str | None) -> tuple[str, str | None]:
    """The URL and token to use (see :mod:`gentity.client.config` for the order)."""
    # Read the config file at most once, and not at all when both are given.
    config = load_config() if not (base_url and token) else None
    url = resolve_base_url(base_url, config)
    return url, resolve_token(token, url, config)


def credential_headers(token: str | None, cookies: httpx.Cookies) -> dict[str, str]:
    """Headers that authenticate a request httpx does not send itself (the WebSocket)."""
    if token:
        return {"Authorization": f"Bearer {token}"}
    jar = "; ".join(f"{c.name}={c.value}" for c in cookies.jar)
    return {"Cookie": jar} if jar else {}


def request_headers(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def timeout_for(call: Call[Any]) -> Any:
    """The call's own timeout, or httpx's marker for "the client's default"."""
    return call.timeout if call.timeout is not None else httpx.USE_CLIENT_DEFAULT


def connection_error(exc: httpx.TransportError, base_url: str) -> ApiConnectionError:
    return ApiConnectionError(base_url, describe_transport_error(exc))


def raise_for_status(response: httpx.Response) -> None:
    """Raise :class:`ApiError` for an error answer or a redirect (the body must be read)."""
    if response.is_redirect:
        where = response.headers.get("location", "elsewhere")
        raise ApiError(
            response.status_code, f"the server redirects to {where}; use that URL instead"
        )
    if response.is_error:
        raise error_from_response(response)


def finish(call: Call[T], response: httpx.Response) -> T:
    """Turn a read response into the call's result, or raise :class:`ApiError`."""
    raise_for_status(response)
    try:
        data = response.json()
    except ValueError:
        raise ApiError(
            response.status_code, f"unexpected answer from {response.url}: not JSON"
        ) from None
    try:
        return call.parse(data)
    except ValidationError as exc:
        raise ApiError(
            response.status_code, f"unexpected answer from {response.url}: {_first_error(exc)}"
        ) from None


def _first_error(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"])
    return f"{where}: {first['msg']}" if where else first["msg"]


def check_event_stream(response: httpx.Response) -> None:
    """A follow's answer must be an event stream (a proxy may hand back HTML)."""
    kind = response.headers.get("content-type", "")
    if not kind.startswith("text/event-stream"):
        raise ApiError(response.status_code, f"expected an event stream, got {kind or 'nothing'}")


def log_line(event: Event) -> models.LogLine | None:
    """The log record in one SSE event; None for an empty or malformed frame."""
    if not event.data:
        return None
    try:
        return models.LogLine.model_validate(json.loads(event.data))
    except (ValueError, ValidationError):
        return None


def instance_event(event: Event) -> models.InstanceEvent | None:
    """The status change in one SSE event; None for an empty or malformed frame."""
    if not event.data:
        return None
    try:
        return models.InstanceEvent.model_validate(json.loads(event.data))
    except (ValueError, ValidationError):
        return None


@dataclass(frozen=True)
class ExecOutput:
    """Output of a streamed exec: ``stream`` is ``stdout`` or ``stderr``; ``data`` is text
    (the command's bytes as UTF-8, invalid bytes replaced)."""

    stream: Literal["stdout", "stderr"]
    data: str


def exec_event(event: Event) -> ExecOutput | models.ExecExit | None:
    """Output or the end in one event of an exec stream; None for anything else. An ``error``
    event (the instance stopped answering) raises ApiError as a 502."""
    try:
        data = json.loads(event.data) if event.data else None
        if event.name == "exit":
            return models.ExecExit.model_validate(data)
        if event.name in ("stdout", "stderr") and isinstance(data, dict):
            text = data.get("data")
            if isinstance(text, str):
                return ExecOutput(event.name, text)  # type: ignore[arg-type]
        if event.name == "error" and isinstance(data, dict):
            raise ApiError(502, str(data.get("error") or "the command's stream broke off"))
    except (ValueError, ValidationError):
        raise ApiError(502, "the server sent a malformed exec event") from None
    return None


def is_destroyed(event: models.InstanceEvent) -> bool:
    return event.to_status is models.InstanceStatus.DESTROYED


def stream_headers(cursor: str | None) -> dict[str, str]:
    headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
    if cursor is not None:
        headers["Last-Event-ID"] = cursor
    return headers


def stream_timeout(timeout: httpx.Timeout) -> httpx.Timeout:
    return httpx.Timeout(
        connect=timeout.connect, read=STREAM_READ_TIMEOUT, write=timeout.write, pool=timeout.pool
    )


class FollowState(Generic[R]):
    """The reconnect logic of a followed stream (logs, events), shared by both clients.

    The cursor is the ``id:`` of the last event seen; a reconnect sends it as ``Last-Event-ID``
    so the server resumes right after it. Only a stream that has been open once is retried:
    a first connection that fails is a wrong URL or a down server, and says so at once.
    ``what`` names the stream in errors; ``parse`` reads a record out of an event; the follow
    is over after a record for which ``last`` is true (an instance's ``destroyed`` event), or
    when the followed thing is gone.
    """

    def __init__(
        self,
        base_url: str,
        cursor: str | None,
        max_reconnects: int,
        reconnect_delay: float,
        *,
        what: str,
        parse: Callable[[Event], R | None],
        replay: dict[str, int] | None = None,
        last: Callable[[R], bool] | None = None,
    ) -> None:
        self.base_url = base_url
        self.cursor = cursor
        self.max_reconnects = max_reconnects
        self.backoff = Backoff(first=reconnect_delay)
        self.opened = False
        self.finished = False
        self.reason = "the connection closed"
        self.what = what
        self._parse = parse
        self._replay = replay or {}
        self._last = last

    def headers(self) -> dict[str, str]:
        return stream_headers(self.cursor)

    def params(self) -> dict[str, int]:
        # `replay` (how many recent records first) only shapes the first connection: once
        # there is a cursor the server resumes from it, and leaving it out keeps that obvious.
        if self.cursor is not None:
            return {"follow": 1}
        return {"follow": 1, **self._replay}

    def on_open(self) -> None:
        self.opened = True

    def on_line(self) -> None:
        # Any line, keep-alives included, proves the link works again.
        self.backoff.reset()

    def on_event(self, event: Event) -> R | None:
        if event.id is not None:
            self.cursor = event.id
        record = self._parse(event)
        if record is not None and self._last is not None and self._last(record):
            self.finished = True
        return record

    def on_error_answer(self, error: ApiError) -> bool:
        """After an error answer: True to stop quietly, False to retry; raises when final."""
        if not self.opened:
            raise error
        if error.status == 404:
            return True  # the instance was deleted while we followed it: its stream is over
        if error.status not in RETRY_STATUSES:
            raise error
        self.reason = str(error)
        return False

    def on_transport_error(self, exc: httpx.TransportError) -> None:
        if not self.opened:
            raise connection_error(exc, self.base_url) from exc
        self.reason = describe_transport_error(exc)

    def next_delay(self) -> float:
        if self.backoff.attempts >= self.max_reconnects:
            raise ApiConnectionError(self.base_url, f"{self.what} lost ({self.reason})")
        return self.backoff.next_delay()
