"""The one request path to Fly's APIs: authorization, pacing, retries, timeouts, errors."""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import random
import time
from collections.abc import Mapping
from typing import Any

import httpx

from gentity.providers.compute.fly.errors import FlyApiError, FlyErrorKind, classify
from gentity.providers.compute.fly.ratelimit import Pacer

NONCE_HEADER = "fly-machine-lease-nonce"


def authorization(token: str) -> str:
    """The header value for ``token``: macaroon tokens printed as ``FlyV1 ...`` go verbatim,
    anything else as a bearer token (an extra ``Bearer`` prefix is dropped)."""
    token = token.strip()
    if token.startswith("FlyV1 "):
        return token
    return "Bearer " + token.removeprefix("Bearer ").strip()


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if value is None:
        return None
    if value.strip().isdigit():
        return float(value)
    with contextlib.suppress(TypeError, ValueError):
        when = email.utils.parsedate_to_datetime(value)
        return max(0.0, when.timestamp() - time.time())
    return None


class FlyHttp:
    """An HTTP client for one token: every call paced, retried within bounds, and turned into a
    :class:`FlyApiError` when it fails (see :class:`~gentity.providers.compute.fly.api.FlyApi`
    for the knobs)."""

    def __init__(
        self,
        token: str,
        *,
        base_url: str,
        timeout: float,
        retries: int,
        max_retry_after: float,
        transport: httpx.AsyncBaseTransport | None,
    ) -> None:
        self._token = token
        self.timeout = timeout
        self._retries = retries
        self._max_retry_after = max_retry_after
        self._pacer = Pacer()
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            headers={"Authorization": authorization(token), "User-Agent": "gentity"},
            timeout=timeout,
            transport=transport,
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def request(
        self,
        method: str,
        url: str,
        *,
        pace: str | None = None,
        rate: tuple[float, float] = (1.0, 3.0),
        json: Any = None,
        params: Mapping[str, Any] | list[tuple[str, Any]] | None = None,
        nonce: str | None = None,
        read_timeout: float | None = None,
    ) -> httpx.Response:
        if pace is not None:
            await self._pacer.turn(pace, *rate)
        headers = {NONCE_HEADER: nonce} if nonce else {}
        for attempt in range(self._retries + 1):
            try:
                response = await self._client.request(
                    method,
                    url,
                    json=json,
                    params=params,
                    headers=headers,
                    timeout=read_timeout or self.timeout,
                )
            except httpx.TimeoutException:
                raise FlyApiError(FlyErrorKind.TIMEOUT, f"{method} {url}: timed out") from None
            except httpx.TransportError as exc:
                reason = self._safe(str(exc) or type(exc).__name__)
                raise FlyApiError(FlyErrorKind.UPSTREAM, f"{method} {url}: {reason}") from None
            if response.status_code < 400:
                return self._checked(method, url, response)
            if response.status_code in (429, 503) and attempt < self._retries:
                delay = _retry_after(response)
                if delay is None:  # back off, with jitter so that callers spread out
                    delay = 0.5 * 2**attempt * random.uniform(1.0, 1.5)  # noqa: S311 - not a secret
                if delay <= self._max_retry_after:
                    await asyncio.sleep(delay)
                    continue
            break
        raise self._error(response)

    @staticmethod
    def _checked(method: str, url: str, response: httpx.Response) -> httpx.Response:
        """``response``, once it is known to be JSON (or empty), so callers can decode it."""
        if response.content:
            try:
                response.json()
            except ValueError:
                raise FlyApiError(
                    FlyErrorKind.UPSTREAM,
                    f"{method} {url}: the answer is not JSON",
                    response.status_code,
                ) from None
        return response

    def _error(self, response: httpx.Response) -> FlyApiError:
        try:
            body = response.json()
        except ValueError:
            body = None
        kind, message = classify(response.status_code, body)
        return FlyApiError(kind, self._safe(message), response.status_code)

    def _safe(self, text: str) -> str:
        """``text`` without the token, should a server or library ever echo it."""
        secret = self._token.strip().removeprefix("FlyV1 ").removeprefix("Bearer ").strip()
        return text.replace(secret, "[token]") if secret else text
