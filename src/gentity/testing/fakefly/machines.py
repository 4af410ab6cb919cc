"""Routes for machines: create, read, lifecycle calls, wait, events and metadata."""

from __future__ import annotations

import asyncio
import copy
import shlex
import signal
import time
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from gentity.testing.fakefly import ids
from gentity.testing.fakefly.errors import FlyError, bad_request, not_found, precondition
from gentity.testing.fakefly.execute import run_in
from gentity.testing.fakefly.fleet import DEFAULT_STOP_TIMEOUT, Fleet
from gentity.testing.fakefly.leases import guard
from gentity.testing.fakefly.requests import flag, json_body, token_owner
from gentity.testing.fakefly.state import App, Lease, Machine, private_ip

WAIT_STATES = {"started", "stopped", "suspended", "destroyed", "failed", "settled"}
SETTLED = {"started", "stopped", "suspended", "destroyed", "failed"}
MAX_WAIT = 60
EXEC_TIMEOUT = 60.0  # the public proxy cuts requests at 60 s, as it does wait
LIST_FILTER_STATES = {"created", "started", "stopped", "suspended", "failed"}


def _signal(value: object, default: int = signal.SIGTERM) -> int:
    if value in (None, ""):
        return default
    if isinstance(value, int) or (isinstance(value, str) and value.isdigit()):
        return int(value)
    try:
        return int(signal.Signals[str(value).upper()])
    except KeyError:
        raise bad_request(f"invalid signal {value!r}") from None


def _stop_timeout(machine: Machine, value: object, int_unit: float) -> float:
    if value in (None, ""):
        value = (machine.config.get("stop_config") or {}).get("timeout")
        int_unit = 1e-9
    if value in (None, ""):
        return DEFAULT_STOP_TIMEOUT
    try:
        return ids.parse_duration(value, int_unit=int_unit)
    except ValueError as exc:
        raise bad_request(str(exc)) from None


def _stop_signal(machine: Machine, value: object) -> int:
    configured = (machine.config.get("stop_config") or {}).get("signal")
    return _signal(value if value not in (None, "") else configured)


def _live(app: App, machine_id: str) -> Machine:
    machine = app.machine(machine_id)
    if machine.state == "destroyed":
        raise not_found("machine")
    return machine


def _wanted_states(request: Request) -> set[str]:
    values = request.query_params.getlist("state") or ["started"]
    states = {s.strip() for value in values for s in value.split(",") if s.strip()}
    unknown = states - WAIT_STATES
    if unknown:
        raise bad_request(f"invalid state {sorted(unknown)[0]!r}")
    return states


def _matches(machine: Machine, wanted: set[str]) -> bool:
    return machine.state in wanted or ("settled" in wanted and machine.state in SETTLED)


def router(fleet: Fleet) -> APIRouter:
    routes = APIRouter(prefix="/v1/apps/{app}/machines")

    @routes.get("")
    async def list_machines(app: str, request: Request) -> JSONResponse:
        query = request.query_params
        states = {s for s in query.get("state", "").split(",") if s}
        if states - LIST_FILTER_STATES:
            raise bad_request(f"invalid state filter {query.get('state')!r}")
        metadata = {k[len("metadata.") :]: v for k, v in query.items() if k.startswith("metadata.")}
        found = []
        for machine in fleet.app(app).machines.values():
            if machine.state == "destroyed" and not flag(request, "include_deleted"):
                continue
            if states and machine.state not in states:
                continue
            if query.get("region") and machine.region != query["region"]:
                continue
            own = machine.config.get("metadata") or {}
            if any(own.get(k) != v for k, v in metadata.items()):
                continue
            found.append(machine.to_json(summary=flag(request, "summary")))
        return JSONResponse(found)

    @routes.post("")
    async def create_machine(app: str, request: Request) -> JSONResponse:
        target = fleet.app(app)
        body = await json_body(request)
        config = body.get("config")
        if not isinstance(config, dict):
            raise bad_request("config is required")
        mounts = config.get("mounts") or []
        region = body.get("region")
        if not region and mounts:
            region = target.volume(str(mounts[0].get("volume", ""))).region
        region = str(region or fleet.default_region)
        fleet.check_capacity(region)
        fleet.check_config(target, config, None)
        for mount in mounts:
            if target.volume(str(mount["volume"])).region != region:
                raise bad_request(f"volume {mount['volume']} is not in region {region}")
        name = str(body.get("name") or f"fake-{ids.nonce()}")
        if any(m.name == name and m.state != "destroyed" for m in target.machines.values()):
            raise bad_request(f"a machine named {name!r} already exists")
        machine_id = ids.machine_id()
        machine = Machine(
            id=machine_id,
            app=app,
            name=name,
            region=region,
            config=copy.deepcopy(config),
            private_ip=private_ip(target, machine_id),
        )
        target.machines[machine_id] = machine
        fleet.attach_volumes(target, machine)
        machine.event("launch", "created", "user")
        answer = machine.to_json()
        lease_ttl = int(body.get("lease_ttl") or 0)
        if lease_ttl > 0:
            owner = token_owner(request)
            machine.lease = Lease(ids.nonce(), owner, "", time.time() + lease_ttl, machine.version)
            answer["nonce"] = machine.lease.nonce
        if not body.get("skip_launch"):
            fleet.schedule(machine, lambda: fleet.boot(target, machine))
        return JSONResponse(answer)

    @routes.get("/{machine_id}")
    async def get_machine(app: str, machine_id: str) -> JSONResponse:
        return JSONResponse(fleet.app(app).machine(machine_id).to_json())

    @routes.post("/{machine_id}")
    async def update_machine(app: str, machine_id: str, request: Request) -> JSONResponse:
        target = fleet.app(app)
        machine = _live(target, machine_id)
        guard(machine, request)
        body = await json_body(request)
        config = body.get("config")
        if not isinstance(config, dict):
            raise bad_request("config is required")
        current = body.get("current_version")
        if current and current != machine.version:
            raise precondition(f"machine version {current} is not the current version")
        if body.get("region") and body["region"] != machine.region:
            raise bad_request("region cannot be changed")
        fleet.check_config(target, config, machine.id)
        running = machine.state in ("started", "starting", "suspended")
        machine.config = copy.deepcopy(config)
        machine.version = ids.ulid()
        fleet.attach_volumes(target, machine)
        machine.event("update", "replacing" if running else "updated", "user")
        if running:  # a running machine reboots into its new config
            await machine.set_state("replacing")
            signum, timeout = _stop_signal(machine, None), _stop_timeout(machine, None, 1e-9)
            fleet.schedule(machine, lambda: fleet.stop(machine, signum, timeout))
        if running or not body.get("skip_launch"):
            fleet.schedule(machine, lambda: fleet.boot(target, machine))
        return JSONResponse(machine.to_json())

    @routes.delete("/{machine_id}")
    async def delete_machine(app: str, machine_id: str, request: Request) -> JSONResponse:
        target = fleet.app(app)
        machine = _live(target, machine_id)
        guard(machine, request)
        forced = flag(request, "force") or flag(request, "kill")
        if machine.state not in ("stopped", "created", "failed", "suspended") and not forced:
            raise precondition(
                f"unable to destroy machine, not currently stopped or suspended: {machine.state!r}"
            )
        await machine.set_state("destroying")
        fleet.schedule(machine, lambda: fleet.destroy(target, machine))
        return JSONResponse({"ok": True})

    @routes.post("/{machine_id}/start")
    async def start_machine(app: str, machine_id: str, request: Request) -> JSONResponse:
        target = fleet.app(app)
        machine = _live(target, machine_id)
        guard(machine, request)
        previous = machine.state
        machine.restarts = 0  # the restart policy counts crashes since the last start
        if previous == "suspended":
            await machine.set_state("starting")
            fleet.schedule(machine, lambda: fleet.resume(target, machine))
        elif previous in ("created", "stopped", "failed"):
            fleet.check_capacity(machine.region)
            await machine.set_state("starting")
            fleet.schedule(machine, lambda: fleet.boot(target, machine))
        elif previous not in ("started", "starting"):
            raise precondition(f"unable to start machine from current state: {previous!r}")
        return JSONResponse({"previous_state": previous, "migrated": False, "new_host": ""})

    @routes.post("/{machine_id}/stop")
    async def stop_machine(app: str, machine_id: str, request: Request) -> JSONResponse:
        machine = _live(fleet.app(app), machine_id)
        guard(machine, request)
        body = await json_body(request)
        signum = _stop_signal(machine, body.get("signal"))
        timeout = _stop_timeout(machine, body.get("timeout"), 1e-9)
        if machine.state in ("started", "starting", "suspended"):
            await machine.set_state("stopping")
            fleet.schedule(machine, lambda: fleet.stop(machine, signum, timeout))
        elif machine.state not in ("stopped", "stopping", "created"):
            raise precondition(f"unable to stop machine from current state: {machine.state!r}")
        return JSONResponse({"ok": True})

    @routes.post("/{machine_id}/restart")
    async def restart_machine(app: str, machine_id: str, request: Request) -> JSONResponse:
        target = fleet.app(app)
        machine = _live(target, machine_id)
        guard(machine, request)
        query = request.query_params
        signum = _stop_signal(machine, query.get("signal"))
        timeout = (
            0.0
            if flag(request, "force_stop")
            else _stop_timeout(machine, query.get("timeout"), 1.0)
        )
        if machine.state not in ("started", "stopped", "suspended"):
            raise precondition(f"unable to restart machine from current state: {machine.state!r}")
        machine.event("restart", machine.state, "user")
        await machine.set_state("restarting")
        fleet.schedule(machine, lambda: fleet.stop(machine, signum, timeout))
        fleet.schedule(machine, lambda: fleet.boot(target, machine))
        return JSONResponse({"ok": True})

    @routes.post("/{machine_id}/suspend")
    async def suspend_machine(app: str, machine_id: str, request: Request) -> JSONResponse:
        machine = _live(fleet.app(app), machine_id)
        guard(machine, request)
        if machine.state != "started":
            raise precondition(f"unable to suspend machine from current state: {machine.state!r}")
        await machine.set_state("suspending")
        fleet.schedule(machine, lambda: fleet.suspend(machine))
        return JSONResponse({"ok": True})

    @routes.post("/{machine_id}/signal")
    async def signal_machine(app: str, machine_id: str, request: Request) -> Response:
        machine = _live(fleet.app(app), machine_id)
        guard(machine, request)
        signum = _signal((await json_body(request)).get("signal"), default=-1)
        if signum < 0:
            raise bad_request("signal is required")
        if machine.sandbox is None:
            raise precondition("machine is not running")
        machine.sandbox.signal(signum)
        return JSONResponse({"ok": True})

    @routes.post("/{machine_id}/exec")
    async def exec_command(app: str, machine_id: str, request: Request) -> JSONResponse:
        machine = _live(fleet.app(app), machine_id)
        guard(machine, request)
        body = await json_body(request)
        command = body.get("command")
        if command is None and isinstance(body.get("cmd"), str):
            command = shlex.split(body["cmd"])  # the deprecated form fly-go still sends
        if not isinstance(command, list) or not command:
            raise bad_request("command is required")
        try:
            limit = float(body.get("timeout") or EXEC_TIMEOUT)
        except (TypeError, ValueError):
            raise bad_request("timeout must be a number of seconds") from None
        if machine.state != "started" or machine.sandbox is None:
            raise precondition(f"machine is not started: {machine.state!r}")
        exit_code, exit_signal, stdout, stderr = await run_in(
            machine.sandbox,
            [str(a) for a in command],
            machine.sandbox.env,
            str(body.get("stdin") or ""),
            min(limit, EXEC_TIMEOUT),
        )
        return JSONResponse(
            {"exit_code": exit_code, "exit_signal": exit_signal, "stdout": stdout, "stderr": stderr}
        )

    @routes.post("/{machine_id}/cordon")
    async def cordon(app: str, machine_id: str, request: Request) -> JSONResponse:
        machine = _live(fleet.app(app), machine_id)
        guard(machine, request)
        machine.cordoned = True
        return JSONResponse({"ok": True})

    @routes.post("/{machine_id}/uncordon")
    async def uncordon(app: str, machine_id: str, request: Request) -> JSONResponse:
        machine = _live(fleet.app(app), machine_id)
        guard(machine, request)
        machine.cordoned = False
        return JSONResponse({"ok": True})

    @routes.get("/{machine_id}/wait")
    async def wait(app: str, machine_id: str, request: Request) -> JSONResponse:
        machine = fleet.app(app).machine(machine_id)
        query = request.query_params
        wanted = _wanted_states(request)
        try:
            timeout = int(query.get("timeout") or MAX_WAIT)
        except ValueError:
            raise bad_request("timeout must be a whole number of seconds") from None
        if not 0 < timeout <= MAX_WAIT:
            raise bad_request(f"timeout must be between 1 and {MAX_WAIT} seconds")
        version = query.get("version") or query.get("instance_id")
        if "stopped" in wanted and not version:
            raise bad_request("instance_id or version is required when waiting for stopped")
        if version and version != machine.version:
            raise bad_request(f"version {version} is not the machine's current version")
        try:
            async with machine.changed:
                await asyncio.wait_for(
                    machine.changed.wait_for(lambda: _matches(machine, wanted)), timeout
                )
        except TimeoutError:
            raise FlyError(
                408,
                "deadline_exceeded: machine failed to reach desired state, "
                f"{','.join(sorted(wanted))}, currently {machine.state}",
            ) from None
        return JSONResponse(
            {"ok": True, "state": machine.state, "event_id": "", "version": machine.version}
        )

    @routes.get("/{machine_id}/events")
    async def events(app: str, machine_id: str, request: Request) -> JSONResponse:
        machine = fleet.app(app).machine(machine_id)
        try:
            limit = min(int(request.query_params.get("limit") or 20), 50)
        except ValueError:
            raise bad_request("invalid limit") from None
        return JSONResponse(machine.events[:limit])

    @routes.get("/{machine_id}/metadata")
    async def get_metadata(app: str, machine_id: str) -> JSONResponse:
        machine = _live(fleet.app(app), machine_id)
        return JSONResponse(machine.config.get("metadata") or {})

    @routes.put("/{machine_id}/metadata")
    async def replace_metadata(app: str, machine_id: str, request: Request) -> Response:
        machine = _live(fleet.app(app), machine_id)
        body = await json_body(request)
        expected = body.get("machine_version")
        if expected and expected != machine.version:
            raise precondition("machine version does not match")
        values: Any = body.get("metadata")
        if not isinstance(values, dict):
            raise bad_request("metadata must be an object")
        machine.config["metadata"] = {str(k): str(v) for k, v in values.items()}
        return Response(status_code=204)

    @routes.get("/{machine_id}/metadata/{key}")
    async def get_metadata_key(app: str, machine_id: str, key: str) -> JSONResponse:
        metadata = _live(fleet.app(app), machine_id).config.get("metadata") or {}
        if key not in metadata:
            raise not_found("metadata key")
        return JSONResponse({"value": metadata[key]})

    @routes.post("/{machine_id}/metadata/{key}")
    async def set_metadata_key(app: str, machine_id: str, key: str, request: Request) -> Response:
        machine = _live(fleet.app(app), machine_id)
        value = (await json_body(request)).get("value")
        if not isinstance(value, str):
            raise bad_request("value must be a string")
        machine.config.setdefault("metadata", {})[key] = value
        return Response(status_code=204)

    @routes.delete("/{machine_id}/metadata/{key}")
    async def delete_metadata_key(app: str, machine_id: str, key: str) -> Response:
        machine = _live(fleet.app(app), machine_id)
        (machine.config.get("metadata") or {}).pop(key, None)
        return Response(status_code=204)

    return routes
