"""Fault injection for tests, on paths no real API has (``/__fake__/...``).

A rule matches requests by method and a path regular expression and, for its next ``times``
matches, either answers in its place (``respond``: status, JSON body, headers) or holds the
request for ``hang_seconds`` before letting it through.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from fastapi.responses import JSONResponse

from gentity.testing.fakefly.errors import bad_request


@dataclass
class Fault:
    method: str | None
    path: re.Pattern[str]
    times: int
    status: int | None = None
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    hang_seconds: float = 0.0

    def matches(self, method: str, path: str) -> bool:
        return (
            self.times > 0
            and (self.method is None or self.method == method)
            and self.path.search(path) is not None
        )

    def response(self) -> JSONResponse | None:
        if self.status is None:
            return None
        return JSONResponse(self.body, status_code=self.status, headers=self.headers)


def parse(spec: dict[str, Any]) -> Fault:
    """A fault from ``{"match": {method, path}, "respond": {...} | "hang_seconds", "times"}``."""
    match = spec.get("match") or {}
    respond = spec.get("respond")
    try:
        fault = Fault(
            method=(str(match["method"]).upper() if match.get("method") else None),
            path=re.compile(str(match.get("path", ".*"))),
            times=int(spec.get("times", 1)),
            hang_seconds=float(spec.get("hang_seconds", 0)),
        )
        if respond is not None:
            fault.status = int(respond["status"])
            fault.body = respond.get("body", {"error": "injected fault"})
            fault.headers = {str(k): str(v) for k, v in (respond.get("headers") or {}).items()}
    except (KeyError, TypeError, ValueError, re.error) as exc:
        raise bad_request(f"invalid fault: {exc}") from None
    if fault.status is None and fault.hang_seconds <= 0:
        raise bad_request("invalid fault: give respond or hang_seconds")
    return fault


class Faults:
    def __init__(self) -> None:
        self.rules: list[Fault] = []

    def take(self, method: str, path: str) -> Fault | None:
        """The first rule matching this request, with one use consumed."""
        for rule in self.rules:
            if rule.matches(method, path):
                rule.times -= 1
                return rule
        return None
