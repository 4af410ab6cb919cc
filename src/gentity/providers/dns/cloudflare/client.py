"""An async client of Cloudflare's v4 API: envelope, errors, rate limit, retries, pagination.

Retries live here and nowhere else: a 429 is retried after its ``Retry-After`` (when that is
short enough to wait for), a 5xx, a timeout or a broken connection after a backoff with
jitter. Every other answer is final. Every method the provider uses is safe to repeat: a
create that timed out but happened comes back as a duplicate, which the provider accepts.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator
from typing import Any

import httpx

from gentity.providers.dns.base import DnsError, DnsErrorKind
from gentity.providers.dns.ratelimit import TokenBucket

log = logging.getLogger(__name__)

# Cloudflare allows 1,200 requests per 5 minutes per token, counting the dashboard's and any
# other tool's use of the same token. 3.5/s with a burst of 50 spends at most 1,100 of them.
DEFAULT_RATE = 3.5
DEFAULT_BURST = 50
PAGE_SIZE = 100
"""Records per list page. The documented maximum has varied between versions; 100 always works."""

# Error codes meaning the credentials were refused: missing or malformed headers, a token
# that is invalid, lacks the permission or is used from a place it is restricted from.
_AUTH_CODES = frozenset({1000, 6003, 9106, 9109, 10000})


class CloudflareError(DnsError):
    """An error answer from Cloudflare, with its HTTP status and error codes."""

    def __init__(
        self,
        kind: DnsErrorKind,
        message: str,
        status: int = 0,
        codes: frozenset[int] = frozenset(),
        retry_after: float | None = None,
    ) -> None:
        super().__init__(kind, message)
        self.status = status
        """The HTTP status; 0 when there was no answer."""
        self.codes = codes
        """Cloudflare's error codes, those of ``error_chain`` included."""
        self.retry_after = retry_after
        """Seconds a 429 asked us to wait (its ``Retry-After``), when it said."""


class CloudflareClient:
    """Calls under one base URL with one API token (sent as ``Authorization: Bearer``)."""

    def __init__(
        self,
        api_url: str,
        token: str,
        *,
        timeout: float = 10.0,
        retries: int = 3,
        backoff: float = 0.5,
        max_retry_after: float = 30.0,
        bucket: TokenBucket | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not token:
            raise ValueError("a Cloudflare API token is required")
        self._token = token
        self._retries = retries
        self._backoff = backoff
        self._max_retry_after = max_retry_after
        self._timeout = timeout
        self._bucket = bucket or TokenBucket(DEFAULT_RATE, DEFAULT_BURST)
        self._http = httpx.AsyncClient(
            base_url=api_url.rstrip("/"),
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout,
            transport=transport,
        )

    def __repr__(self) -> str:
        return f"CloudflareClient({str(self._http.base_url)!r})"

    async def close(self) -> None:
        await self._http.aclose()

    async def call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str | int] | None = None,
        json: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The envelope of a successful answer; :class:`CloudflareError` for any other."""
        attempt = 0
        while True:
            try:
                return await self._once(method, path, params, json)
            except CloudflareError as exc:
                delay = self._retry_delay(exc, attempt)
                if delay is None:
                    raise
                log.info(
                    "Cloudflare %s %s failed (%s), retrying in %.1fs",
                    method,
                    path,
                    exc.message,
                    delay,
                )
            attempt += 1
            await asyncio.sleep(delay)

    async def pages(
        self, path: str, params: dict[str, str | int]
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """The ``result`` of each page of a list call, first to last."""
        page = 1
        while True:
            envelope = await self.call(
                "GET", path, params={**params, "page": page, "per_page": PAGE_SIZE}
            )
            results: list[dict[str, Any]] = envelope.get("result") or []
            yield results
            info = envelope.get("result_info") or {}
            if not results or page >= int(info.get("total_pages") or 1):
                return
            page += 1

    def _retry_delay(self, exc: CloudflareError, attempt: int) -> float | None:
        if attempt >= self._retries:
            return None
        if exc.kind is DnsErrorKind.RATE_LIMITED and exc.retry_after is not None:
            # A long wait fails the call at once: Cloudflare blocks a token for up to five
            # minutes, and the caller's next round (the reconciler) is a better place to retry.
            return exc.retry_after if exc.retry_after <= self._max_retry_after else None
        if exc.kind in (DnsErrorKind.RATE_LIMITED, DnsErrorKind.TIMEOUT) or (
            exc.kind is DnsErrorKind.UPSTREAM and (exc.status >= 500 or exc.status == 0)
        ):
            # Jitter spreads the retries of several replicas; it guards nothing secret.
            return self._backoff * 2.0**attempt * random.uniform(0.5, 1.5)  # noqa: S311
        return None

    async def _once(
        self,
        method: str,
        path: str,
        params: dict[str, str | int] | None,
        json: dict[str, Any] | None,
    ) -> dict[str, Any]:
        await self._bucket.acquire()
        try:
            response = await self._http.request(method, path, params=params, json=json)
        except httpx.TimeoutException:
            raise CloudflareError(
                DnsErrorKind.TIMEOUT,
                f"Cloudflare did not answer {method} {path} within {self._timeout:g}s",
            ) from None
        except httpx.TransportError as exc:
            raise CloudflareError(
                DnsErrorKind.UPSTREAM,
                self._redact(f"could not reach Cloudflare: {exc}"),
            ) from None
        return self._envelope(method, path, response)

    def _envelope(self, method: str, path: str, response: httpx.Response) -> dict[str, Any]:
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise CloudflareError(
                DnsErrorKind.RATE_LIMITED if response.status_code == 429 else DnsErrorKind.UPSTREAM,
                f"Cloudflare answered {method} {path} with {response.status_code} "
                "and a body that is not its JSON envelope",
                response.status_code,
                retry_after=_seconds(response.headers.get("retry-after")),
            )
        if response.is_success and body.get("success") is True:
            return body
        errors = [e for e in body.get("errors") or [] if isinstance(e, dict)]
        codes = frozenset(
            code
            for e in errors
            for code in [e.get("code"), *(c.get("code") for c in _chain(e))]
            if isinstance(code, int)
        )
        status = response.status_code
        retry_after = None
        if status == 429:
            kind = DnsErrorKind.RATE_LIMITED
            retry_after = _seconds(response.headers.get("retry-after"))
        elif status < 500 and (status in (401, 403) or codes & _AUTH_CODES):
            kind = DnsErrorKind.UNAUTHORIZED
        else:
            kind = DnsErrorKind.UPSTREAM
        message = _describe(errors) or f"HTTP {status}"
        if retry_after is not None:
            message += f" (retry in {retry_after:g}s)"
        raise CloudflareError(
            kind, self._redact(f"Cloudflare: {message}"), status, codes, retry_after
        )

    def _redact(self, text: str) -> str:
        # An error body or exception that echoes the token must not carry it any further.
        return text.replace(self._token, "[token]")


def _describe(errors: list[dict[str, Any]]) -> str:
    """``"81053 An A, AAAA, or CNAME record with that host already exists."`` and the like."""
    parts = []
    for error in errors:
        text = f"{error.get('code', '?')} {error.get('message', '')}".strip()
        chain = [str(c.get("message", "")) for c in _chain(error)]
        parts.append(f"{text} ({'; '.join(chain)})" if chain else text)
    return "; ".join(parts)


def _seconds(header: str | None) -> float | None:
    """A ``Retry-After`` in seconds (the only form Cloudflare sends), or None."""
    try:
        seconds = float(header or "")
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


def _chain(error: dict[str, Any]) -> list[dict[str, Any]]:
    """The causes Cloudflare lists under an error (``error_chain``), if any."""
    return [c for c in error.get("error_chain") or [] if isinstance(c, dict)]
