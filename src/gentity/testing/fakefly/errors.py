"""Errors the fake answers with, in the real Machines API's shape: ``{"error": ..., "status"?}``."""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import JSONResponse


class FlyError(Exception):
    """An error response: HTTP ``code``, Fly's message, and ``status`` when Fly sets one."""

    def __init__(self, code: int, message: str, status: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status

    def body(self) -> dict[str, str]:
        body = {"error": self.message}
        if self.status is not None:
            body["status"] = self.status
        return body


def not_found(what: str) -> FlyError:
    return FlyError(404, f"{what} not found")


def precondition(message: str) -> FlyError:
    return FlyError(412, f"failed_precondition: {message}")


def bad_request(message: str) -> FlyError:
    return FlyError(400, message)


async def fly_error_handler(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, FlyError)
    return JSONResponse(exc.body(), status_code=exc.code)
