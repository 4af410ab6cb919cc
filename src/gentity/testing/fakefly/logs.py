"""Fly's log polling API (``GET /api/v1/apps/{app}/logs``), fed by the machines' output.

``next_token`` is a nanosecond Unix timestamp, as on Fly: a page holds the lines after it, and
its ``meta.next_token`` is the timestamp of the page's last line. Without a token the answer is
the most recent lines. stdout and stderr are not told apart (Fly's are not either).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from gentity.testing.fakefly.errors import bad_request, not_found
from gentity.testing.fakefly.state import Json

PAGE_SIZE = 100
KEEP = 10_000  # lines kept per app, oldest dropped first


@dataclass(frozen=True)
class LogLine:
    timestamp_ns: int
    machine_id: str
    region: str
    message: str

    def to_json(self, app: str) -> Json:
        seconds, nanos = divmod(self.timestamp_ns, 1_000_000_000)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
        return {
            "id": f"{self.machine_id}-{self.timestamp_ns}",
            "type": "logs",
            "attributes": {
                "timestamp": f"{stamp}.{nanos // 1000:06d}Z",
                "message": self.message,
                "level": "info",
                "instance": self.machine_id,
                "region": self.region,
                "meta": {
                    "instance": self.machine_id,
                    "region": self.region,
                    "event": {"provider": "app"},
                    "app": app,
                },
            },
        }


class LogStore:
    """Every app's lines, in order, each with a distinct nanosecond timestamp."""

    def __init__(self) -> None:
        self._lines: dict[str, list[LogLine]] = {}
        self._last_ns = 0

    def add(self, app: str, machine_id: str, region: str, message: str) -> None:
        # Distinct and increasing, so that a token never splits two lines of the same instant.
        self._last_ns = max(time.time_ns(), self._last_ns + 1)
        lines = self._lines.setdefault(app, [])
        lines.append(LogLine(self._last_ns, machine_id, region, message))
        del lines[:-KEEP]

    def drop(self, app: str) -> None:
        self._lines.pop(app, None)

    def page(
        self, app: str, after_ns: int | None, instance: str | None, region: str | None
    ) -> list[LogLine]:
        lines = [
            line
            for line in self._lines.get(app, [])
            if (instance is None or line.machine_id == instance)
            and (region is None or line.region == region)
        ]
        if after_ns is None:
            return lines[-PAGE_SIZE:]
        return [line for line in lines if line.timestamp_ns > after_ns][:PAGE_SIZE]


def router(store: LogStore, app_exists: Callable[[str], bool]) -> APIRouter:
    routes = APIRouter(prefix="/api/v1")

    @routes.get("/apps/{app}/logs")
    async def logs(app: str, request: Request) -> JSONResponse:
        if not app_exists(app):
            raise not_found("app")
        query = request.query_params
        token = query.get("next_token") or None
        try:
            after = int(token) if token is not None else None
        except ValueError:
            raise bad_request("invalid next_token") from None
        lines = store.page(app, after, query.get("instance") or None, query.get("region") or None)
        next_token = str(lines[-1].timestamp_ns) if lines else (token or "")
        return JSONResponse(
            {"data": [line.to_json(app) for line in lines], "meta": {"next_token": next_token}}
        )

    return routes
