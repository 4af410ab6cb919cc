"""The fake's apps and machine lifecycles: what flyd does between API calls.

Lifecycle calls answer at once with the machine in a transient state (``starting``,
``stopping``, ``destroying``) and finish in the background, as on Fly, so clients have to
``wait``. Each machine's transitions run one at a time, in the order they were asked for.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import functools
import logging
import shutil
import signal
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

from gentity.testing.fakefly import ids
from gentity.testing.fakefly.errors import FlyError, bad_request, not_found
from gentity.testing.fakefly.logs import LogStore
from gentity.testing.fakefly.runner import Launch, LaunchError, start
from gentity.testing.fakefly.sandbox import Placement, canonical_guest_path
from gentity.testing.fakefly.state import App, Json, Machine

log = logging.getLogger(__name__)

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEFAULT_STOP_TIMEOUT = 5.0
DEFAULT_MAX_RETRIES = 10


def command_for(config: Json, images: Mapping[str, list[str]]) -> list[str]:
    """The argv a machine runs. ``init.exec`` replaces everything; otherwise ``init.entrypoint``
    then ``init.cmd``, the image's command (from the fake's image table) standing in for a
    missing ``cmd``. The fake cannot pull images, so with none of these the machine is refused."""
    init = config.get("init") or {}
    if init.get("exec"):
        return [str(a) for a in init["exec"]]
    cmd = init.get("cmd") or images.get(str(config.get("image", "")), [])
    argv = [str(a) for a in (init.get("entrypoint") or []) + list(cmd)]
    if not argv:
        raise bad_request(
            f"fake: no command for image {config.get('image')!r}: set config.init.cmd "
            "(or init.exec/entrypoint), or register the image with the fake"
        )
    return argv


def internal_ports(config: Json) -> list[int]:
    return sorted({int(s["internal_port"]) for s in config.get("services") or [] if s})


class Fleet:
    """All apps of the fake, their machines' processes, and their logs."""

    def __init__(
        self, state_dir: Path, images: Mapping[str, list[str]], default_region: str
    ) -> None:
        self.state_dir = state_dir
        self.images = dict(images)
        self.default_region = default_region
        self.apps: dict[str, App] = {}
        self.logs = LogStore()
        self.capacity: dict[str, str] = {}
        """region -> message of the insufficient_capacity error creates there get."""
        self._locks: dict[str, asyncio.Lock] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def app(self, name: str) -> App:
        app = self.apps.get(name)
        if app is None:
            raise not_found("app")
        return app

    def check_capacity(self, region: str) -> None:
        if region in self.capacity:
            raise FlyError(412, self.capacity[region], "insufficient_capacity")

    def machine_dir(self, machine: Machine) -> Path:
        return self.state_dir / "machines" / machine.id

    def check_config(self, app: App, config: Json, machine_id: str | None) -> None:
        """Refuse a config the fake could not boot, before anything changes."""
        if not config.get("image"):
            raise bad_request("image is required")
        command_for(config, self.images)
        for service in config.get("services") or []:
            if not isinstance(service, dict) or not isinstance(service.get("internal_port"), int):
                raise bad_request("services: internal_port must be an integer")
        for mount in config.get("mounts") or []:
            volume = app.volume(str(mount.get("volume", "")))
            if volume.attached_machine_id not in (None, machine_id):
                raise FlyError(
                    409,
                    f"failed_precondition: volume {volume.id} is currently bound to machine: "
                    f"{volume.attached_machine_id}",
                )
            canonical_guest_path(str(mount.get("path", "")))
        for spec in config.get("files") or []:
            canonical_guest_path(str(spec.get("guest_path", "")))
            if "raw_value" not in spec:
                raise bad_request("fake: only files with raw_value are supported")
            try:
                base64.b64decode(spec["raw_value"], validate=True)
            except (binascii.Error, TypeError):
                raise bad_request("files: raw_value is not valid base64") from None

    def attach_volumes(self, app: App, machine: Machine) -> None:
        for volume in app.volumes.values():
            if volume.attached_machine_id == machine.id:
                volume.attached_machine_id = None
        for mount in machine.config.get("mounts") or []:
            app.volume(str(mount["volume"])).attached_machine_id = machine.id

    # Background transitions ------------------------------------------------------------

    def schedule(self, machine: Machine, step: Callable[[], Awaitable[None]]) -> asyncio.Task[None]:
        """Run ``step`` after the machine's earlier transitions (await the task to know when
        it is done)."""
        lock = self._locks.setdefault(machine.id, asyncio.Lock())

        async def run() -> None:
            async with lock:
                try:
                    await step()
                except Exception:
                    log.exception("fake machine %s: transition failed", machine.id)

        task = asyncio.create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def boot(self, app: App, machine: Machine) -> None:
        """created/stopped -> starting -> started, or back to stopped if it cannot run."""
        if machine.state in ("stopping", "destroying", "destroyed"):
            return  # stopped or destroyed before its turn came: the queued step finishes it
        await machine.set_state("starting")
        machine.stop_requested = False
        try:
            sandbox = await start(self._launch(app, machine))
        except (LaunchError, ValueError, OSError) as exc:
            self.logs.add(app.name, machine.id, machine.region, f"[fakefly] boot failed: {exc}")
            machine.event("exit", "stopped", "flyd", exit_event={"exit_code": 1, "error": str(exc)})
            await machine.set_state("stopped")
            return
        machine.sandbox = sandbox
        task = asyncio.create_task(self._watch(app, machine, sandbox.wait()))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        machine.task = task
        machine.event("start", "started", "flyd")
        if machine.state == "starting":  # not asked to stop meanwhile
            await machine.set_state("started")

    async def _watch(self, app: App, machine: Machine, exited: Awaitable[int]) -> None:
        code = await exited
        machine.exit_code = code
        if machine.stop_requested:
            return  # the stop (or destroy) that asked for it records the rest
        machine.sandbox = None
        policy = (machine.config.get("restart") or {}).get("policy", "on-failure")
        retries = (machine.config.get("restart") or {}).get("max_retries", DEFAULT_MAX_RETRIES)
        restarting = (policy == "always" or (policy.startswith("on-fail") and code != 0)) and (
            machine.restarts < int(retries)
        )
        machine.event(
            "exit",
            "stopped",
            "flyd",
            exit_event={
                "exit_code": code,
                "guest_exit_code": code,
                "requested_stop": False,
                "restarting": restarting,
                "exited_at": ids.iso(),
            },
        )
        if machine.config.get("auto_destroy") and not restarting:
            self.schedule(machine, lambda: self.destroy(app, machine))
        elif restarting:
            machine.restarts += 1
            self.schedule(machine, lambda: self.boot(app, machine))
        else:
            self.schedule(machine, lambda: machine.set_state("stopped"))

    async def halt(self, machine: Machine, signum: int, grace: float) -> None:
        """Signal the main process, SIGKILL everything after ``grace`` seconds; wait until gone."""
        sandbox, task = machine.sandbox, machine.task
        machine.stop_requested = True
        if sandbox is None or task is None:
            return
        if sandbox.paused:
            sandbox.pause(False)  # a frozen process would not act on the signal
        sandbox.signal(signum)
        try:
            await asyncio.wait_for(asyncio.shield(task), grace)
        except TimeoutError:
            sandbox.kill()
            await task
        machine.sandbox = None
        machine.event(
            "exit",
            "stopped",
            "flyd",
            exit_event={"exit_code": machine.exit_code, "requested_stop": True},
        )

    async def stop(self, machine: Machine, signum: int, grace: float) -> None:
        await self.halt(machine, signum, grace)
        if machine.state in ("replacing", "restarting"):
            machine.event("stop", "stopped", "user")  # booted again next, in the same state
        elif machine.state not in ("destroying", "destroyed"):
            machine.event("stop", "stopped", "user")
            await machine.set_state("stopped")

    async def suspend(self, machine: Machine) -> None:
        if machine.sandbox is not None:
            machine.sandbox.pause(True)
        machine.event("suspend", "suspended", "user")
        await machine.set_state("suspended")

    async def resume(self, app: App, machine: Machine) -> None:
        """Thaw a suspended machine; one with nothing left to thaw boots afresh, as a Fly
        machine whose snapshot cannot be restored does."""
        if machine.sandbox is None:
            await self.boot(app, machine)
            return
        machine.sandbox.pause(False)
        machine.event("start", "started", "flyd")
        await machine.set_state("started")

    async def destroy(self, app: App, machine: Machine) -> None:
        await machine.set_state("destroying")
        await self.halt(machine, signal.SIGKILL, 0)
        for volume in app.volumes.values():
            if volume.attached_machine_id == machine.id:
                volume.attached_machine_id = None
        shutil.rmtree(self.machine_dir(machine), ignore_errors=True)
        machine.event("destroy", "destroyed", "user")
        await machine.set_state("destroyed")
        self._locks.pop(machine.id, None)

    async def delete_app(self, app: App) -> None:
        """Delete an app with everything in it: machines killed, volumes removed."""
        self.apps.pop(app.name, None)
        for machine in app.machines.values():
            if machine.state != "destroyed":
                # In turn, so that a boot under way finishes first and is then undone.
                await self.schedule(machine, functools.partial(self.destroy, app, machine))
        for volume in app.volumes.values():
            volume.state = "destroyed"
            shutil.rmtree(volume.path, ignore_errors=True)
        self.logs.drop(app.name)

    async def shutdown(self) -> None:
        """Kill every machine and wait for them: the fake leaves no process behind."""
        for app in list(self.apps.values()):
            await self.delete_app(app)
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # Launch ----------------------------------------------------------------------------

    def _launch(self, app: App, machine: Machine) -> Launch:
        workdir = self.machine_dir(machine)
        shutil.rmtree(workdir, ignore_errors=True)  # the root filesystem is fresh on each boot
        (workdir / "files").mkdir(parents=True)
        config = machine.config
        placements = []
        for mount in config.get("mounts") or []:
            volume = app.volume(str(mount["volume"]))
            placements.append(Placement(volume.path, canonical_guest_path(str(mount["path"]))))
        for index, spec in enumerate(config.get("files") or []):
            staged = workdir / "files" / str(index)
            staged.write_bytes(base64.b64decode(spec["raw_value"]))
            staged.chmod(int(spec.get("mode") or 0o644))
            placements.append(Placement(staged, canonical_guest_path(str(spec["guest_path"]))))
        guest = config.get("guest") or {}
        env = {
            "PATH": DEFAULT_PATH,
            "HOME": "/root",
            **{str(k): str(v) for k, v in (config.get("env") or {}).items()},
            "FLY_APP_NAME": app.name,
            "FLY_MACHINE_ID": machine.id,
            "FLY_ALLOC_ID": machine.id,
            "FLY_MACHINE_VERSION": machine.version,
            "FLY_REGION": machine.region,
            "FLY_PRIVATE_IP": machine.private_ip,
            "FLY_IMAGE_REF": str(config.get("image", "")),
            "FLY_PROCESS_GROUP": str((config.get("metadata") or {}).get("fly_process_group", "")),
            "FLY_VM_MEMORY_MB": str(guest.get("memory_mb", 256)),
            "PRIMARY_REGION": machine.region,
        }

        def output(line: str) -> None:
            self.logs.add(app.name, machine.id, machine.region, line)

        return Launch(
            hostname=machine.id,
            command=command_for(config, self.images),
            env=env,
            placements=placements,
            ports=internal_ports(config),
            workdir=workdir,
            on_output=output,
        )
