"""A low-level async client of Fly's Machines API (``/v1``) and logs API (``/api/v1``).

Calls map one to one onto the API and return its JSON as it comes; errors are one exception
type, :class:`FlyApiError`, with a kind to act on. Beyond that the client keeps to Fly's rules
so callers need not: requests are paced to the published rate limits, 429 and 503 answers are
retried after their ``Retry-After`` (within a bound), every call has a timeout, and guarded
mutations carry the lease nonce when one is held (:meth:`FlyApi.leased`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from gentity.providers.compute.fly.errors import FlyApiError, FlyErrorKind
from gentity.providers.compute.fly.http import FlyHttp

Json = dict[str, Any]

MACHINES_URL = "https://api.machines.dev"
LOGS_URL = "https://api.fly.io"
MAX_WAIT_SECONDS = 60
"""Fly's proxy cuts ``wait`` at 60 s, and the API refuses longer."""
LOG_POLL_FAILURES = 10
ORG_PAGE = 2000
"""Machines per page of the organization's listing (Fly's maximum)."""
ORG_MAX_PAGES = 1000
"""A bound on the pages followed, against a cursor that never ends."""


@dataclass(frozen=True)
class Lease:
    nonce: str
    owner: str
    expires_at: int


@dataclass(frozen=True)
class ExecResult:
    exit_code: int
    stdout: str
    stderr: str


@dataclass(frozen=True)
class LogPage:
    entries: list[Json]
    """``attributes`` of each line: timestamp, message, level, instance, region, meta."""
    next_token: str
    """Pass back to get the lines after these; unchanged when there were none."""


class FlyApi:
    """The Machines and logs APIs for one token. Close with :meth:`aclose` (or ``async with``).

    ``base_url`` is the Machines API (``FLY_FLAPS_BASE_URL`` in flyctl's terms) and
    ``logs_url`` the logs API; both point at the fake in tests. ``transport`` is for
    ``httpx.MockTransport``. ``timeout`` bounds every call except ``wait`` and ``exec``, which
    get their own time on top. A 429 or 503 (answers Fly gives before doing anything, so even a
    create is safe to repeat) is retried up to ``retries`` times when its ``Retry-After`` is at
    most ``max_retry_after`` seconds, with jittered backoff when it has none; otherwise it is
    raised. ``lease_wait`` bounds how long :meth:`acquire_lease` waits out someone else's lease.
    """

    def __init__(
        self,
        token: str,
        *,
        base_url: str = MACHINES_URL,
        logs_url: str = LOGS_URL,
        timeout: float = 30.0,
        retries: int = 3,
        max_retry_after: float = 10.0,
        lease_wait: float = 60.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._http = FlyHttp(
            token,
            base_url=base_url,
            timeout=timeout,
            retries=retries,
            max_retry_after=max_retry_after,
            transport=transport,
        )
        self._request = self._http.request
        self._lease_wait = lease_wait
        self._logs_url = logs_url.rstrip("/")

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> FlyApi:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()

    # Token ----------------------------------------------------------------------------

    async def verify(self) -> Json:
        """Check the token works; returns what Fly knows of it (org, apps)."""
        response = await self._request("GET", "/v1/tokens/current")
        body: Json = response.json()
        return body

    # Apps -----------------------------------------------------------------------------

    async def create_app(self, name: str, org_slug: str, network: str | None = None) -> Json:
        body = {"name": name, "org_slug": org_slug}
        if network:
            body["network"] = network
        response = await self._request("POST", "/v1/apps", json=body)
        return response.json() if response.content else {"name": name}

    async def list_apps(self, org_slug: str) -> list[Json]:
        apps: list[Json] = (
            await self._request("GET", "/v1/apps", params={"org_slug": org_slug})
        ).json()["apps"]
        return apps

    async def get_app(self, name: str) -> Json:
        body: Json = (await self._request("GET", f"/v1/apps/{name}")).json()
        return body

    async def delete_app(self, name: str) -> None:
        """Delete an app with its machines and volumes."""
        await self._request("DELETE", f"/v1/apps/{name}", pace="DELETE app", rate=(100 / 60, 100))

    async def list_ips(self, app: str) -> list[Json]:
        ips: list[Json] = (await self._request("GET", f"/v1/apps/{app}/ip_assignments")).json()[
            "ips"
        ]
        return ips

    async def assign_ip(self, app: str, kind: str = "shared_v4", **extra: str) -> Json:
        body = {"type": kind, **extra}
        ip: Json = (await self._request("POST", f"/v1/apps/{app}/ip_assignments", json=body)).json()
        return ip

    async def release_ip(self, app: str, ip: str) -> None:
        await self._request("DELETE", f"/v1/apps/{app}/ip_assignments/{ip}")

    # Volumes --------------------------------------------------------------------------

    async def create_volume(
        self, app: str, name: str, region: str, size_gb: int, *, encrypted: bool = True
    ) -> Json:
        body = {
            "name": name,
            "region": region,
            "size_gb": size_gb,
            "encrypted": encrypted,
            # One volume per app: requiring a zone of its own can only make creation fail.
            "require_unique_zone": False,
        }
        volume: Json = (await self._request("POST", f"/v1/apps/{app}/volumes", json=body)).json()
        return volume

    async def get_volume(self, app: str, volume_id: str) -> Json:
        volume: Json = (await self._request("GET", f"/v1/apps/{app}/volumes/{volume_id}")).json()
        return volume

    async def list_volumes(self, app: str) -> list[Json]:
        volumes: list[Json] = (await self._request("GET", f"/v1/apps/{app}/volumes")).json()
        return volumes

    async def delete_volume(self, app: str, volume_id: str) -> None:
        await self._request("DELETE", f"/v1/apps/{app}/volumes/{volume_id}")

    # Machines -------------------------------------------------------------------------

    def _machine(self, app: str, machine_id: str, action: str = "") -> tuple[str, str]:
        """(path, pacing key) of a machine call."""
        path = f"/v1/apps/{app}/machines/{machine_id}" + (f"/{action}" if action else "")
        return path, f"{action or 'machine'} {app}/{machine_id}"

    async def create_machine(
        self,
        app: str,
        config: Json,
        *,
        region: str | None = None,
        name: str | None = None,
        skip_launch: bool = False,
    ) -> Json:
        """Create a machine; it boots unless ``skip_launch`` (then it stays ``created``)."""
        body: Json = {"config": config, "skip_launch": skip_launch}
        if region:
            body["region"] = region
        if name:
            body["name"] = name
        response = await self._request(
            "POST", f"/v1/apps/{app}/machines", pace=f"create {app}", json=body
        )
        machine: Json = response.json()
        return machine

    async def get_machine(self, app: str, machine_id: str) -> Json:
        path, key = self._machine(app, machine_id)
        machine: Json = (await self._request("GET", path, pace=f"GET {key}", rate=(5, 10))).json()
        return machine

    async def list_machines(
        self, app: str, *, include_deleted: bool = False, metadata: Mapping[str, str] | None = None
    ) -> list[Json]:
        params = {f"metadata.{k}": v for k, v in (metadata or {}).items()}
        if include_deleted:
            params["include_deleted"] = "true"
        response = await self._request(
            "GET", f"/v1/apps/{app}/machines", pace=f"list {app}", params=params
        )
        machines: list[Json] = response.json()
        return machines

    async def list_org_machines(self, org_slug: str, *, limit: int = ORG_PAGE) -> list[Json]:
        """Every live machine of the organization, of all its apps (``OrgMachine`` objects:
        ``id``, ``app_name``, ``state``… without config), following ``next_cursor`` page by
        page. Fly says the listing is a point in time that may lag recent changes."""
        machines: list[Json] = []
        params: dict[str, str] = {"summary": "true", "limit": str(limit)}
        for _ in range(ORG_MAX_PAGES):
            response = await self._request(
                "GET",
                f"/v1/orgs/{org_slug}/machines",
                # Paced as a read: a listing's pages follow one another at once.
                pace=f"list org {org_slug}",
                rate=(5, 10),
                params=params,
            )
            body: Json = response.json()
            page = body.get("machines") or []
            machines += page
            cursor = body.get("next_cursor")
            if not page or not cursor:
                return machines
            params["cursor"] = str(cursor)
        raise FlyApiError(
            FlyErrorKind.UPSTREAM, f"listing the machines of {org_slug}: too many pages"
        )

    async def update_machine(
        self, app: str, machine_id: str, config: Json, *, nonce: str | None = None
    ) -> Json:
        """Replace the machine's whole config (a running machine reboots into it)."""
        path, key = self._machine(app, machine_id)
        response = await self._request(
            "POST", path, pace=f"update {key}", json={"config": config}, nonce=nonce
        )
        machine: Json = response.json()
        return machine

    async def start_machine(self, app: str, machine_id: str, *, nonce: str | None = None) -> Json:
        path, key = self._machine(app, machine_id, "start")
        answer: Json = (await self._request("POST", path, pace=key, nonce=nonce)).json()
        return answer

    async def stop_machine(
        self,
        app: str,
        machine_id: str,
        *,
        signal: str = "SIGTERM",
        grace_seconds: int = 10,
        nonce: str | None = None,
    ) -> None:
        path, key = self._machine(app, machine_id, "stop")
        body = {"signal": signal, "timeout": f"{grace_seconds}s"}
        await self._request("POST", path, pace=key, json=body, nonce=nonce)

    async def restart_machine(
        self, app: str, machine_id: str, *, grace_seconds: int = 10, nonce: str | None = None
    ) -> None:
        path, key = self._machine(app, machine_id, "restart")
        params = {"timeout": f"{grace_seconds}s"}
        await self._request("POST", path, pace=key, params=params, nonce=nonce)

    async def delete_machine(
        self, app: str, machine_id: str, *, force: bool = False, nonce: str | None = None
    ) -> None:
        path, key = self._machine(app, machine_id)
        params = {"force": "true"} if force else {}
        await self._request("DELETE", path, pace=f"DELETE {key}", params=params, nonce=nonce)

    async def wait_machine(
        self,
        app: str,
        machine_id: str,
        state: str = "started",
        *,
        version: str | None = None,
        seconds: int = MAX_WAIT_SECONDS,
    ) -> Json:
        """Block until the machine is in ``state`` (a ``timeout`` error after ``seconds``,
        at most 60). Waiting for ``stopped`` needs the ``version`` that was stopped."""
        seconds = max(1, min(seconds, MAX_WAIT_SECONDS))
        path, key = self._machine(app, machine_id, "wait")
        params = {"state": state, "timeout": str(seconds)}
        if version:
            params["version"] = version
        response = await self._request(
            "GET", path, pace=key, params=params, read_timeout=seconds + self._http.timeout
        )
        answer: Json = response.json()
        return answer

    async def exec_machine(
        self, app: str, machine_id: str, command: list[str], *, stdin: str = "", seconds: int = 30
    ) -> ExecResult:
        """Run ``command`` in the started machine and return its whole output (not interactive,
        at most 60 s). A failing command is a result with its exit code, not an error."""
        seconds = max(1, min(seconds, MAX_WAIT_SECONDS))
        path, key = self._machine(app, machine_id, "exec")
        body: Json = {"command": command, "timeout": seconds}
        if stdin:
            body["stdin"] = stdin
        response = await self._request(
            "POST", path, pace=key, json=body, read_timeout=seconds + self._http.timeout
        )
        answer = response.json()
        # fly-go omits zero values, so a missing exit code is a success.
        return ExecResult(
            int(answer.get("exit_code") or 0),
            str(answer.get("stdout") or ""),
            str(answer.get("stderr") or ""),
        )

    async def machine_events(self, app: str, machine_id: str, limit: int = 20) -> list[Json]:
        """Newest first."""
        path, key = self._machine(app, machine_id, "events")
        response = await self._request("GET", path, pace=key, params={"limit": limit})
        events: list[Json] = response.json()
        return events

    async def get_metadata(self, app: str, machine_id: str) -> dict[str, str]:
        path, key = self._machine(app, machine_id, "metadata")
        metadata: dict[str, str] = (await self._request("GET", path, pace=key)).json()
        return metadata

    async def set_metadata(self, app: str, machine_id: str, key: str, value: str) -> None:
        path, pace = self._machine(app, machine_id, "metadata")
        await self._request("POST", f"{path}/{key}", pace=pace, json={"value": value})

    async def delete_metadata(self, app: str, machine_id: str, key: str) -> None:
        path, pace = self._machine(app, machine_id, "metadata")
        await self._request("DELETE", f"{path}/{key}", pace=f"DELETE {pace}")

    # Leases ---------------------------------------------------------------------------

    async def acquire_lease(
        self, app: str, machine_id: str, *, ttl: int = 30, description: str = "gentity"
    ) -> Lease:
        """Take the machine's lease, retrying with backoff while someone else holds it (for
        up to ``lease_wait`` seconds, then the ``lease_held`` error is raised)."""
        path, key = self._machine(app, machine_id, "lease")
        deadline = time.monotonic() + self._lease_wait
        delay = 0.5
        while True:
            try:
                response = await self._request(
                    "POST", path, pace=key, json={"ttl": ttl, "description": description}
                )
            except FlyApiError as exc:
                if exc.kind is not FlyErrorKind.LEASE_HELD or time.monotonic() + delay > deadline:
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            data = response.json()["data"]
            return Lease(str(data["nonce"]), str(data.get("owner", "")), int(data["expires_at"]))

    async def release_lease(self, app: str, machine_id: str, nonce: str) -> None:
        """Give the lease back; one that already expired is fine."""
        path, key = self._machine(app, machine_id, "lease")
        try:
            await self._request("DELETE", path, pace=f"DELETE {key}", nonce=nonce)
        except FlyApiError as exc:
            if exc.kind is not FlyErrorKind.NOT_FOUND:
                raise

    @contextlib.asynccontextmanager
    async def leased(self, app: str, machine_id: str, *, ttl: int = 30) -> AsyncIterator[str]:
        """Hold the machine's lease around a mutation; yields the nonce to pass to it."""
        lease = await self.acquire_lease(app, machine_id, ttl=ttl)
        try:
            yield lease.nonce
        except BaseException:
            # The lease expires by itself: failing to release it must not hide the real error.
            with contextlib.suppress(FlyApiError):
                await self.release_lease(app, machine_id, lease.nonce)
            raise
        await self.release_lease(app, machine_id, lease.nonce)

    # Logs -----------------------------------------------------------------------------

    async def logs(
        self,
        app: str,
        *,
        next_token: str | None = None,
        instance: str | None = None,
        region: str | None = None,
    ) -> LogPage:
        """One page of the app's log: the latest lines, or those after ``next_token``."""
        params = {
            name: value
            for name, value in (
                ("next_token", next_token),
                ("instance", instance),
                ("region", region),
            )
            if value
        }
        url = f"{self._logs_url}/api/v1/apps/{app}/logs"
        body = (await self._request("GET", url, params=params)).json()
        entries = [item["attributes"] for item in body.get("data") or []]
        token = str((body.get("meta") or {}).get("next_token") or "") or (next_token or "")
        return LogPage(entries, token)

    async def follow_logs(
        self, app: str, *, instance: str | None = None, next_token: str | None = None
    ) -> AsyncGenerator[Json]:
        """Every new log line, as ``fly logs`` polls: right away after a full page, backing off
        from 64 ms to 4 s while there is nothing; passing errors (5xx, 429, timeouts) are
        retried the same way, up to 10 in a row."""
        delay, failures = 0.0, 0
        while True:
            try:
                page = await self.logs(app, next_token=next_token, instance=instance)
            except FlyApiError as exc:
                failures += 1
                passing = exc.kind in (
                    FlyErrorKind.UPSTREAM,
                    FlyErrorKind.RATE_LIMITED,
                    FlyErrorKind.TIMEOUT,
                )
                if not passing or failures >= LOG_POLL_FAILURES:
                    raise
                page = LogPage([], next_token or "")
            else:
                failures = 0
            next_token = page.next_token or next_token
            for entry in page.entries:
                yield entry
            delay = 0.0 if page.entries else min(max(delay * 2, 0.064), 4.0)
            await asyncio.sleep(delay)
