"""The SDK's errors: one type for every answer the server refused, one for "no answer at all"."""

from __future__ import annotations

import os
import re
from http import HTTPStatus

import httpx


class ApiError(Exception):
    """The server answered with an error: ``status`` is the HTTP status, ``message`` the
    server's ``{"error": ...}`` text (or the status phrase when the body carried none).

    ``str(error)`` is one line meant for people, e.g. ``Not Found (404)``.
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(status, message)
        self.status = status
        self.message = message

    def __str__(self) -> str:
        return f"{self.message} ({self.status})"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(status={self.status!r}, message={self.message!r})"


class ApiConnectionError(ApiError, ConnectionError):
    """The server could not be reached, or the connection broke before it answered.

    ``status`` is 0: there is no HTTP status. ``str(error)`` reads like
    ``cannot reach http://127.0.0.1:8080: connection refused``. Also a :class:`ConnectionError`,
    so code that already handles the builtin catches it.
    """

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(0, f"cannot reach {url}: {reason}")
        self.url = url
        self.reason = reason

    def __str__(self) -> str:
        return self.message


_ERRNO_PREFIX = re.compile(r"^\[Errno -?\d+\]\s*")


def describe_transport_error(exc: BaseException) -> str:
    """A short lower-case reason from an httpx/socket failure: ``connection refused``."""
    if isinstance(exc, httpx.TimeoutException | TimeoutError):
        return "timed out"
    # httpx wraps the socket error; the innermost OSError carries the readable strerror.
    inner: BaseException | None = exc
    while inner is not None:
        if isinstance(inner, OSError) and inner.errno and inner.errno > 0:
            # By number: asyncio's strerror can be "Connect call failed ('127.0.0.1', 1)".
            # (Resolver errors have negative numbers and a good strerror.)
            return os.strerror(inner.errno).lower()
        if isinstance(inner, OSError) and inner.strerror:
            return inner.strerror.lower()
        inner = inner.__cause__ or inner.__context__
    text = _ERRNO_PREFIX.sub("", str(exc)).strip() or type(exc).__name__
    # httpx sometimes says "All connection attempts failed" for a refused localhost port.
    return text[0].lower() + text[1:]


def error_from_response(response: httpx.Response) -> ApiError:
    """Build the :class:`ApiError` for a 4xx/5xx answer, whatever its body looks like."""
    message = None
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        message = body["error"]
    if not message:
        message = response.reason_phrase or _phrase(response.status_code)
    return ApiError(response.status_code, message)


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"
