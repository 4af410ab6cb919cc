"""Machines that really run: the client drives the fake; machines answer through the edge."""

from __future__ import annotations

import base64
import socket
import ssl
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from gentity.providers.compute.fly.api import FlyApi
from gentity.providers.compute.fly.errors import FlyApiError, FlyErrorKind
from tests.fly.conftest import FakeFly, machine_processes, wait_started

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("sandboxes")]

# A tiny TCP server: answers each connection with what it received and what it can see.
SERVER = r"""
import os, socket
boots = int(open("/data/boots").read()) + 1 if os.path.exists("/data/boots") else 1
open("/data/boots", "w").write(str(boots))
note = open("/etc/gentity/note.txt").read().strip()
print("booted", os.environ["FLY_MACHINE_ID"], "boot", boots, flush=True)
server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("0.0.0.0", 8080))
server.listen()
while True:
    conn, _ = server.accept()
    said = conn.recv(100).decode()
    conn.sendall(f"{said}|{os.environ['FLY_APP_NAME']}|{note}|boot {boots}".encode())
    conn.close()
"""


def config(command: list[str], volume: str | None = None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "image": "registry.fly.io/gentity-guest:test",
        "init": {"cmd": command},
        "guest": {"cpu_kind": "shared", "cpus": 1, "memory_mb": 256},
        "files": [
            {
                "guest_path": "/etc/gentity/note.txt",
                "raw_value": base64.b64encode(b"from config.files").decode(),
            }
        ],
        "services": [
            {
                "protocol": "tcp",
                "internal_port": 8080,
                "ports": [{"port": 443, "handlers": ["tls"]}],
                "autostart": False,
                "autostop": "off",
            }
        ],
        "restart": {"policy": "no"},
        **extra,
    }
    if volume is not None:
        body["mounts"] = [{"volume": volume, "path": "/data"}]
    return body


def through_edge(fake: FakeFly, app: str, message: str, deadline: float = 15.0) -> str:
    """Say ``message`` to the app over TLS at ``<app>.fly.dev:443`` (the edge); its answer.

    A machine is ``started`` once its process runs, which may be before it listens: retried.
    """
    context = ssl.create_default_context(cafile=str(fake.ca_file))
    give_up = time.monotonic() + deadline
    while True:
        try:
            with (
                socket.create_connection(("127.0.0.1", fake.edge_port), timeout=3) as raw,
                context.wrap_socket(raw, server_hostname=f"{app}.fly.dev") as tls,
            ):
                tls.sendall(message.encode())
                answer = tls.recv(1000).decode()
            if answer:
                return answer
            failure: object = "closed without an answer"
        except (ConnectionError, TimeoutError, ssl.SSLEOFError) as exc:
            failure = exc
        if time.monotonic() > give_up:
            raise AssertionError(f"{app} did not answer through the edge: {failure!r}")
        time.sleep(0.2)


async def test_app_volume_and_machine_lifecycle(fake: FakeFly, api: FlyApi) -> None:
    await api.create_app("gentity-cl-one", "personal", network="gentity-cl-one")
    assert (await api.get_app("gentity-cl-one"))["network"] == "gentity-cl-one"
    ip = await api.assign_ip("gentity-cl-one", "shared_v4")
    assert [i["ip"] for i in await api.list_ips("gentity-cl-one")] == [ip["ip"]]
    volume = await api.create_volume("gentity-cl-one", "home", "iad", 3)
    assert volume["id"].startswith("vol_") and volume["attached_machine_id"] is None

    machine = await api.create_machine(
        "gentity-cl-one", config(["python3", "-c", SERVER], volume["id"]), region="iad"
    )
    assert len(machine["id"]) == 14 and machine["state"] == "created"
    assert machine["instance_id"] == machine["version"] and len(machine["version"]) == 26
    await wait_started(api, "gentity-cl-one", machine["id"])
    attached = await api.get_volume("gentity-cl-one", volume["id"])
    assert attached["attached_machine_id"] == machine["id"]

    answer = through_edge(fake, "gentity-cl-one", "hello")
    assert answer == "hello|gentity-cl-one|from config.files|boot 1"
    # The machine wrote to its volume; the host's /etc did not get the machine's file.
    assert (fake.state_dir / "volumes" / volume["id"] / "boots").read_text() == "1"
    assert not Path("/etc/gentity/note.txt").exists()

    with pytest.raises(FlyApiError) as attached_delete:
        await api.delete_volume("gentity-cl-one", volume["id"])
    assert attached_delete.value.kind is FlyErrorKind.REJECTED
    assert "currently bound to machine" in attached_delete.value.message

    async with api.leased("gentity-cl-one", machine["id"]) as nonce:
        await api.stop_machine("gentity-cl-one", machine["id"], nonce=nonce)
    await api.wait_machine(
        "gentity-cl-one", machine["id"], "stopped", version=machine["version"], seconds=20
    )
    assert machine_processes(machine["id"]) == []
    events = await api.machine_events("gentity-cl-one", machine["id"])
    assert [e["type"] for e in events][:2] == ["stop", "exit"]
    assert events[0]["timestamp"] >= events[-1]["timestamp"] > 1_600_000_000_000  # ms, newest first

    # A second boot starts from a fresh root filesystem but keeps the volume.
    await api.start_machine("gentity-cl-one", machine["id"])
    await wait_started(api, "gentity-cl-one", machine["id"])
    assert through_edge(fake, "gentity-cl-one", "again").endswith("|boot 2")

    with pytest.raises(FlyApiError) as running_delete:
        await api.delete_machine("gentity-cl-one", machine["id"])
    assert running_delete.value.status == 412
    await api.delete_machine("gentity-cl-one", machine["id"], force=True)
    await api.wait_machine("gentity-cl-one", machine["id"], "destroyed", seconds=20)
    assert machine_processes(machine["id"]) == []
    assert await api.list_machines("gentity-cl-one") == []
    await api.delete_volume("gentity-cl-one", volume["id"])
    assert not (fake.state_dir / "volumes" / volume["id"]).exists()

    await api.delete_app("gentity-cl-one")
    with pytest.raises(FlyApiError) as gone:
        await api.get_app("gentity-cl-one")
    assert gone.value.kind is FlyErrorKind.NOT_FOUND and gone.value.message == "app not found"


async def test_machines_of_two_apps_listen_on_the_same_port(fake: FakeFly, api: FlyApi) -> None:
    ids = {}
    for app in ("gentity-cl-a", "gentity-cl-b"):
        await api.create_app(app, "personal", network=app)
        volume = await api.create_volume(app, "home", "iad", 1)
        ids[app] = (await api.create_machine(app, config(["python3", "-c", SERVER], volume["id"])))[
            "id"
        ]
    for app, machine_id in ids.items():
        await wait_started(api, app, machine_id)
    assert through_edge(fake, "gentity-cl-a", "x").startswith("x|gentity-cl-a|")
    assert through_edge(fake, "gentity-cl-b", "y").startswith("y|gentity-cl-b|")

    # Deleting an app takes its machines down with it; the other one keeps running.
    await api.delete_app("gentity-cl-a")
    assert machine_processes(ids["gentity-cl-a"]) == []
    assert machine_processes(ids["gentity-cl-b"]) != []
    assert through_edge(fake, "gentity-cl-b", "z").startswith("z|gentity-cl-b|")


async def test_a_process_that_exits_stops_its_machine(fake: FakeFly, api: FlyApi) -> None:
    await api.create_app("gentity-cl-exit", "personal")
    command = ["python3", "-c", "import sys; print('bye', flush=True); sys.exit(3)"]
    machine = await api.create_machine("gentity-cl-exit", config(command))
    await api.wait_machine(
        "gentity-cl-exit", machine["id"], "stopped", version=machine["version"], seconds=20
    )
    exit_event = (await api.machine_events("gentity-cl-exit", machine["id"]))[0]
    output = [e["message"] for e in (await api.logs("gentity-cl-exit")).entries]
    assert exit_event["type"] == "exit", output
    assert exit_event["request"]["exit_event"]["exit_code"] == 3, (exit_event, output)
    assert exit_event["request"]["exit_event"]["requested_stop"] is False


async def test_stop_kills_what_ignores_the_signal(fake: FakeFly, api: FlyApi) -> None:
    await api.create_app("gentity-cl-stubborn", "personal")
    stubborn = (
        "import signal, subprocess, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "subprocess.Popen(['sleep', '300']); print('up', flush=True); time.sleep(300)"
    )
    machine = await api.create_machine("gentity-cl-stubborn", config(["python3", "-c", stubborn]))
    await wait_started(api, "gentity-cl-stubborn", machine["id"])
    page = None
    for _ in range(50):  # until the child runs too
        page = await api.logs("gentity-cl-stubborn")
        if page.entries:
            break
        time.sleep(0.1)
    assert page is not None and [e["message"] for e in page.entries] == ["up"]
    assert len(machine_processes(machine["id"])) >= 1

    started = time.monotonic()
    await api.stop_machine("gentity-cl-stubborn", machine["id"], grace_seconds=1)
    await api.wait_machine(
        "gentity-cl-stubborn", machine["id"], "stopped", version=machine["version"], seconds=20
    )
    assert 1 <= time.monotonic() - started < 10
    assert machine_processes(machine["id"]) == []


async def test_shutting_the_fake_down_kills_its_machines(fake: FakeFly, api: FlyApi) -> None:
    await api.create_app("gentity-cl-left", "personal")
    machine = await api.create_machine("gentity-cl-left", config(["sleep", "300"]))
    await wait_started(api, "gentity-cl-left", machine["id"])
    assert machine_processes(machine["id"]) != []
    fake.server.stop()
    assert machine_processes(machine["id"]) == []
    assert str(fake.state_dir) not in Path("/proc/self/mountinfo").read_text()


async def test_a_machine_without_a_command_is_refused(fake: FakeFly, api: FlyApi) -> None:
    await api.create_app("gentity-cl-nocmd", "personal")
    with pytest.raises(FlyApiError) as refused:
        await api.create_machine("gentity-cl-nocmd", {"image": "registry.fly.io/x:1"})
    assert refused.value.status == 400 and "init.cmd" in refused.value.message


async def test_suspend_restart_and_update(fake: FakeFly, api: FlyApi) -> None:
    app = "gentity-cl-cycle"
    await api.create_app(app, "personal")
    volume = await api.create_volume(app, "home", "iad", 1)
    machine = await api.create_machine(app, config(["python3", "-c", SERVER], volume["id"]))
    await wait_started(api, app, machine["id"])
    assert through_edge(fake, app, "a").endswith("|boot 1")

    # Suspended: frozen, not stopped; starting it again resumes the same boot.
    with httpx.Client(base_url=f"{fake.url}/v1", headers={"Authorization": "Bearer x"}) as raw:
        machine_path = f"/apps/{app}/machines/{machine['id']}"
        assert raw.post(f"{machine_path}/suspend").status_code == 200
        await api.wait_machine(app, machine["id"], "suspended", seconds=20)
        assert raw.get(f"/apps/{app}/machines", params={"state": "started"}).json() == []
        resumed = await api.start_machine(app, machine["id"])
        assert resumed["previous_state"] == "suspended"
        await wait_started(api, app, machine["id"])
        assert through_edge(fake, app, "b").endswith("|boot 1")

        listed = raw.get(f"/apps/{app}/machines", params={"state": "started", "summary": "true"})
        assert [(m["id"], "config" in m) for m in listed.json()] == [(machine["id"], False)]
        assert raw.get(f"/apps/{app}/machines", params={"region": "ord"}).json() == []
    settled = await api.wait_machine(app, machine["id"], "settled", seconds=5)
    assert settled["state"] == "started"

    await api.restart_machine(app, machine["id"], grace_seconds=1)
    await wait_started(api, app, machine["id"])
    assert through_edge(fake, app, "c").endswith("|boot 2")

    # An update replaces the whole config, gets a new version and reboots the machine.
    current = await api.get_machine(app, machine["id"])
    new_config = {**current["config"], "env": {"GREETING": "updated"}}
    async with api.leased(app, machine["id"]) as nonce:
        updated = await api.update_machine(app, machine["id"], new_config, nonce=nonce)
    assert updated["version"] != machine["version"]
    await wait_started(api, app, machine["id"])
    assert through_edge(fake, app, "d").endswith("|boot 3")
    assert (await api.get_machine(app, machine["id"]))["config"]["env"] == {"GREETING": "updated"}

    # A suspended machine is thawed to be stopped: it acts on SIGTERM, not after the grace.
    with httpx.Client(base_url=f"{fake.url}/v1", headers={"Authorization": "Bearer x"}) as raw:
        assert raw.post(f"/apps/{app}/machines/{machine['id']}/suspend").status_code == 200
    await api.wait_machine(app, machine["id"], "suspended", seconds=20)
    started = time.monotonic()
    await api.stop_machine(app, machine["id"], grace_seconds=30)
    await api.wait_machine(app, machine["id"], "stopped", version=updated["version"], seconds=30)
    assert time.monotonic() - started < 10
    assert machine_processes(machine["id"]) == []


async def test_an_app_deleted_while_its_machine_boots(fake: FakeFly, api: FlyApi) -> None:
    await api.create_app("gentity-cl-hasty", "personal")
    machine = await api.create_machine("gentity-cl-hasty", config(["sleep", "300"]))
    await api.delete_app("gentity-cl-hasty")
    assert machine_processes(machine["id"]) == []
    assert not (fake.state_dir / "machines" / machine["id"]).exists()


async def test_exec_runs_inside_the_machine(fake: FakeFly, api: FlyApi) -> None:
    app = "gentity-cl-exec"
    await api.create_app(app, "personal")
    volume = await api.create_volume(app, "home", "iad", 1)
    machine = await api.create_machine(app, config(["python3", "-c", SERVER], volume["id"]))
    await wait_started(api, app, machine["id"])
    through_edge(fake, app, "ready")  # the server has written its boot count by now

    seen = await api.exec_machine(
        app,
        machine["id"],
        ["sh", "-c", "cat /data/boots; hostname; echo $FLY_APP_NAME; cat"],
        stdin="from stdin",
    )
    assert (seen.exit_code, seen.stdout) == (0, f"1{machine['id']}\n{app}\nfrom stdin")
    # Its own PID namespace, and no capabilities even though the fake is root.
    inside = await api.exec_machine(
        app,
        machine["id"],
        ["sh", "-c", "grep CapEff /proc/self/status; ls /proc | grep -c '^[0-9]'"],
    )
    cap_line, process_count = inside.stdout.split("\n")[:2]
    assert cap_line.split()[1] == "0000000000000000" and int(process_count) < 10
    failed = await api.exec_machine(app, machine["id"], ["sh", "-c", "echo oops >&2; exit 4"])
    assert (failed.exit_code, failed.stderr) == (4, "oops\n")
    running = len(machine_processes(machine["id"]))
    slow = await api.exec_machine(app, machine["id"], ["sleep", "30"], seconds=1)
    assert slow.exit_code == 137
    assert len(machine_processes(machine["id"])) == running  # the sleep was killed with it
