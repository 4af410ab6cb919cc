"""The ``fly`` compute provider: each instance a Fly Machine in a Fly app of its own.

One app per instance, named ``<GENTITY_FLY_APP_PREFIX><instance id>`` on a private network
of its own (instances cannot reach one another), with a volume at the guest's home, one
machine and shared IPs so ``<app>.fly.dev`` resolves. The control plane reaches the guest
through Fly's proxy: TLS to ``<app>.fly.dev:443``, forwarded to the guest's port 8080.

Everything is found again from the instance id alone (the app's name, the machine's
metadata), so a create interrupted half-way is finished by the next one, and destroying an
instance is deleting its app, which takes its machine, volume and IPs with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import ssl
import time
from collections.abc import Iterator, Sequence
from functools import cached_property
from typing import Any, Final

from gentity.guest import client as guest_client
from gentity.guest.client import GuestEndpoint, GuestError
from gentity.guest.config import ENV_SECRET_SHA256
from gentity.providers.compute.base import (
    ComputeProvider,
    GuestLaunch,
    GuestLayout,
    KnownInstances,
    MachineHandle,
    MachineSpec,
    MachineState,
    MachineStatus,
    ProviderError,
    status_each,
)
from gentity.providers.compute.fly import guest
from gentity.providers.compute.fly import logs as fly_logs
from gentity.providers.compute.fly.api import MAX_WAIT_SECONDS, FlyApi
from gentity.providers.compute.fly.errors import FlyApiError, FlyErrorKind
from gentity.providers.compute.fly.settings import FlySettings
from gentity.settings import Settings

log = logging.getLogger(__name__)

Json = dict[str, Any]

GUEST_BOOT_SECONDS: Final = 120
"""How long a started machine's guest may take to answer (a first boot installs nothing
before listening, but the image may be pulled)."""
VOLUME_NAME: Final = "home"
_INSTANCE_ID: Final = re.compile(r"c[a-z0-9]{24}")
"""What ``gentity.server.db.ids.new_id`` makes; an app is an instance's only if named so."""

_STATES: Final = {
    "created": MachineState.STOPPED,  # made with skip_launch: at rest until started
    "starting": MachineState.STARTING,
    "started": MachineState.RUNNING,
    "updating": MachineState.STARTING,
    "replacing": MachineState.STARTING,
    "stopping": MachineState.STOPPING,
    "suspending": MachineState.STOPPING,
    "stopped": MachineState.STOPPED,
    "suspended": MachineState.STOPPED,
    "failed": MachineState.STOPPED,
    "destroying": MachineState.DESTROYING,
    "destroyed": MachineState.MISSING,
}


class FlyProvider(ComputeProvider):
    """Instances as Fly Machines, through the Machines API."""

    name = "fly"

    def __init__(self, api: FlyApi, settings: FlySettings) -> None:
        self.api = api
        self.settings = settings

    @classmethod
    def from_settings(cls, _settings: Settings, fly: FlySettings) -> FlyProvider:
        token = fly.api_token.get_secret_value() if fly.api_token is not None else ""
        if not token:
            raise ValueError("the fly compute provider needs GENTITY_FLY_API_TOKEN")
        return cls(FlyApi(token, base_url=fly.api_url, logs_url=fly.logs_url), fly)

    # --- naming ---------------------------------------------------------------------------

    def app_name(self, instance_id: str) -> str:
        return f"{self.settings.app_prefix}{instance_id.lower()}"

    def guest_endpoint(self, handle: MachineHandle) -> GuestEndpoint:
        server_name = f"{handle.ref}.fly.dev"
        if self.settings.edge:
            return GuestEndpoint(f"tls:{self.settings.edge}#{server_name}", self._tls)
        return GuestEndpoint(f"tls:{server_name}:443", self._tls)

    def guest_layout(self, handle: MachineHandle, launch: GuestLaunch) -> GuestLayout:
        return guest.layout(launch, preinstalled=self.settings.image is not None)

    @cached_property
    def _tls(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        if self.settings.ca_file:
            context.load_verify_locations(self.settings.ca_file)
        return context

    # --- start-up -------------------------------------------------------------------------

    async def verify(self) -> None:
        """Check the token before the server starts, so a bad one stops it at once."""
        try:
            await self.api.verify()
        except FlyApiError as exc:
            if exc.kind is FlyErrorKind.UNAUTHORIZED:
                raise ProviderError(
                    f"Fly refused GENTITY_FLY_API_TOKEN ({exc.message}); "
                    "create one with `fly tokens create org`"
                ) from None
            raise ProviderError(
                f"cannot reach the Fly API at {self.settings.api_url}: {exc.message}"
            ) from None

    async def close(self) -> None:
        await self.api.aclose()

    # --- create ---------------------------------------------------------------------------

    async def create(self, spec: MachineSpec) -> MachineHandle:
        app = self.app_name(spec.instance_id)
        region = spec.region or self.settings.region
        with _fly_errors(app, region):
            await self._ensure_app(app)
            await self._ensure_ips(app)
            volume = await self._ensure_volume(app, region, spec.volume_gb)
            machine = await self._ensure_machine(app, spec, volume["id"], volume["region"])
        return MachineHandle(
            ref=app,
            data={"machine": machine["id"], "volume": volume["id"], "region": volume["region"]},
        )

    async def _ensure_app(self, app: str) -> None:
        try:
            await self.api.create_app(app, self.settings.org, network=app)
        except FlyApiError as exc:
            if exc.kind is not FlyErrorKind.NAME_TAKEN:
                raise
            # Made by an earlier create of this instance, or the name is someone else's (then
            # it is not visible to this token).
            try:
                await self.api.get_app(app)
            except FlyApiError as missing:
                if missing.kind is FlyErrorKind.NOT_FOUND:
                    raise ProviderError(
                        f"the Fly app name {app} is taken by another organization ({exc.message})"
                    ) from None
                raise

    async def _ensure_ips(self, app: str) -> None:
        """A shared IPv4 and an IPv6 address, without which ``<app>.fly.dev`` has no records."""
        kinds = {_ip_kind(ip) for ip in await self.api.list_ips(app)}
        for kind in ("shared_v4", "v6"):
            if kind not in kinds:
                await self.api.assign_ip(app, kind)

    async def _ensure_volume(self, app: str, region: str, size_gb: int) -> Json:
        for volume in await self.api.list_volumes(app):
            if volume.get("name") == VOLUME_NAME:
                return volume
        return await self.api.create_volume(app, VOLUME_NAME, region, size_gb)

    async def _ensure_machine(
        self, app: str, spec: MachineSpec, volume_id: str, region: str
    ) -> Json:
        found = await self.api.list_machines(app, metadata={guest.METADATA_KEY: spec.instance_id})
        if found:
            return found[0]
        config = guest.machine_config(
            spec, volume_id, self.settings.image, self.settings.stock_image, secret_hash=""
        )
        # Nothing runs until start: the guest's secret is not known yet.
        return await self.api.create_machine(
            app, config, region=region, name="guest", skip_launch=True
        )

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self, handle: MachineHandle, launch: GuestLaunch) -> MachineHandle | None:
        app, machine_id = handle.ref, _machine_id(handle)
        with _fly_errors(app, handle.data.get("region")):
            machine = await self.api.get_machine(app, machine_id)
            wanted = guest.secret_sha256(launch.secret)
            config: Json = machine.get("config") or {}
            if (config.get("env") or {}).get(ENV_SECRET_SHA256) != wanted:
                # Updating boots a machine at rest, and reboots a running one into the config.
                async with self.api.leased(app, machine_id) as nonce:
                    await self.api.update_machine(
                        app, machine_id, guest.with_secret_hash(config, wanted), nonce=nonce
                    )
            elif machine.get("state") != "started":
                async with self.api.leased(app, machine_id) as nonce:
                    await self.api.start_machine(app, machine_id, nonce=nonce)
            await self._wait_state(app, machine_id, "started")
        # The caller configures the guest next (after every boot: a guest that restarted on its
        # own is configured again); until then it answers health only.
        await self._wait_for_guest(self.guest_endpoint(handle), launch.secret)
        return None

    async def _wait_state(self, app: str, machine_id: str, state: str, version: str = "") -> None:
        try:
            await self.api.wait_machine(
                app, machine_id, state, version=version or None, seconds=MAX_WAIT_SECONDS
            )
        except FlyApiError as exc:
            if exc.kind is not FlyErrorKind.TIMEOUT:
                raise
            raise ProviderError(
                f"Fly machine {machine_id} of {app} did not get {state} "
                f"within {MAX_WAIT_SECONDS} s ({exc.message})"
            ) from None

    async def _wait_for_guest(self, endpoint: GuestEndpoint, secret: str) -> None:
        """Until the guest answers through the proxy: the machine is started as soon as its
        command runs, a moment before the guest listens."""
        deadline = time.monotonic() + GUEST_BOOT_SECONDS
        delay = 0.05
        while True:
            try:
                await guest_client.health(endpoint, secret, timeout=5)
                return
            except GuestError as exc:
                if time.monotonic() + delay > deadline:
                    raise ProviderError(
                        f"the guest did not answer within {GUEST_BOOT_SECONDS} s: {exc}"
                    ) from None
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    async def stop(self, handle: MachineHandle) -> None:
        app, machine_id = handle.ref, _machine_id(handle)
        with _fly_errors(app, None):
            machine = await self._machine_or_none(app, machine_id)
            if machine is None or machine.get("state") in ("created", "stopped", "destroyed"):
                return
            async with self.api.leased(app, machine_id) as nonce:
                await self.api.stop_machine(app, machine_id, nonce=nonce)
            await self._wait_state(app, machine_id, "stopped", str(machine.get("instance_id")))

    async def destroy(self, handle: MachineHandle) -> None:
        await self._delete_app(handle.ref)

    async def destroy_unrecorded(self, instance_id: str) -> None:
        await self._delete_app(self.app_name(instance_id))

    async def _delete_app(self, app: str) -> None:
        """Delete the app with its machine, volume and IPs; a missing one is fine."""
        with _fly_errors(app, None):
            try:
                await self.api.delete_app(app)
            except FlyApiError as exc:
                if exc.kind is not FlyErrorKind.NOT_FOUND:
                    raise

    async def status(self, handle: MachineHandle) -> MachineStatus:
        with _fly_errors(handle.ref, None):
            machine = await self._machine_or_none(handle.ref, _machine_id(handle))
        if machine is None:
            return MachineStatus(MachineState.MISSING)
        return _status_of(machine)

    async def statuses(
        self, handles: Sequence[MachineHandle]
    ) -> list[MachineStatus | ProviderError]:
        """From the organization's machine listing (``GET /v1/orgs/{org}/machines``, up to
        2,000 a page): a few requests for thousands of instances instead of one each.

        Fly says the listing may lag recent changes, so it only vouches for the machines it
        shows; one it does not show (just created, or gone) is asked for on its own, as are
        all of them if the listing fails."""
        try:
            with _fly_errors(None, None):
                listed = await self.api.list_org_machines(self.settings.org)
        except ProviderError as exc:
            log.warning(
                "listing the machines of %s failed (%s); asking each", self.settings.org, exc
            )
            return await status_each(self, handles)
        by_key = {(str(m.get("app_name")), str(m.get("id"))): m for m in listed}
        answers: list[MachineStatus | ProviderError | None] = []
        unlisted: list[int] = []
        for index, handle in enumerate(handles):
            machine = by_key.get((handle.ref, str(handle.data.get("machine"))))
            if machine is None:
                unlisted.append(index)
            answers.append(None if machine is None else _status_of(machine))
        if unlisted:
            asked = await status_each(self, [handles[i] for i in unlisted])
            for index, answer in zip(unlisted, asked, strict=True):
                answers[index] = answer
        return [a for a in answers if a is not None]

    async def _machine_or_none(self, app: str, machine_id: str) -> Json | None:
        try:
            return await self.api.get_machine(app, machine_id)
        except FlyApiError as exc:
            if exc.kind is FlyErrorKind.NOT_FOUND:
                return None
            raise

    async def sweep(self, known_instance_ids: KnownInstances) -> list[str]:
        """Delete the apps named like an instance's (the prefix, then an instance id) whose
        instance the database does not know (left by a create whose row was lost); returns the
        names of the apps deleted. Other apps, even with the prefix, are never touched.

        The apps are listed before ``known_instance_ids()`` reads the database: a row is saved
        before its create makes the app, so an app being made is never taken for an orphan.
        """
        prefix = self.settings.app_prefix
        with _fly_errors(None, None):
            apps = await self.api.list_apps(self.settings.org)
        known = {i.lower() for i in await known_instance_ids()}
        orphans = sorted(
            name
            for app in apps
            if (name := str(app.get("name", ""))).startswith(prefix)
            and _INSTANCE_ID.fullmatch(rest := name.removeprefix(prefix))
            and rest not in known
        )
        for app_name in orphans:
            log.warning("deleting Fly app %s: no instance of this server has it", app_name)
            await self._delete_app(app_name)
        return orphans

    async def tail_stopped(self, handle: MachineHandle, lines: int) -> list[dict[str, str]]:
        """What the guest echoed to its machine's output, from Fly's logs API (its latest page:
        at most 100 lines of output)."""
        with _fly_errors(handle.ref, None):
            try:
                return await fly_logs.tail(self.api, handle.ref, _machine_id(handle), lines)
            except FlyApiError as exc:
                if exc.kind is FlyErrorKind.NOT_FOUND:
                    return []
                raise


def _status_of(machine: Json) -> MachineStatus:
    state = str(machine.get("state"))
    seen = _STATES.get(state)
    if seen is None:
        return MachineStatus(MachineState.STOPPED, f"Fly reports the machine as {state!r}")
    detail = "the Fly machine failed" if state == "failed" else None
    return MachineStatus(seen, detail)


def _ip_kind(assignment: Json) -> str:
    if assignment.get("shared"):
        return "shared_v4"
    return "v6" if ":" in str(assignment.get("ip", "")) else "v4"


def _machine_id(handle: MachineHandle) -> str:
    return str(handle.data["machine"])


@contextlib.contextmanager
def _fly_errors(app: str | None, region: str | None) -> Iterator[None]:
    """Fly API failures as :class:`ProviderError` messages a user can act on."""
    try:
        yield
    except FlyApiError as exc:
        kind, message = exc.kind, exc.message
        if kind is FlyErrorKind.CAPACITY:
            raise ProviderError(
                f"Fly has no capacity in region {region or 'asked for'} ({message}); "
                "try again later or choose another region"
            ) from None
        if kind is FlyErrorKind.NAME_TAKEN:
            raise ProviderError(f"the Fly app name {app} is already taken ({message})") from None
        if kind is FlyErrorKind.LEASE_HELD:
            raise ProviderError(
                f"another client holds the lease of the Fly machine of {app} ({message}); "
                "try again when it is done"
            ) from None
        if kind is FlyErrorKind.UNAUTHORIZED:
            raise ProviderError(f"Fly refused GENTITY_FLY_API_TOKEN ({message})") from None
        if kind is FlyErrorKind.RATE_LIMITED:
            raise ProviderError(f"Fly is rate limiting this server ({message})") from None
        raise ProviderError(f"Fly API: {message}") from None
