"""The fly provider against the fake Fly: the shared contract, then what is Fly's own."""

from __future__ import annotations

import asyncio
import io
import secrets
import shutil
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gentity.catalog import InstallStep
from gentity.providers.compute.base import GuestLaunch, MachineState, ProviderError
from gentity.providers.compute.fly.api import FlyApi
from gentity.providers.compute.fly.provider import FlyProvider
from gentity.providers.compute.fly.settings import FlySettings
from gentity.providers.compute.registry import load
from gentity.server.preflight import StartupError, preflight
from gentity.settings import Settings
from gentity.testing.fakefly import create_app
from tests.conftest import LiveServer, require
from tests.fly.conftest import TOKEN, FakeFly, machine_processes
from tests.providers.contract import (
    ProviderContract,
    launch,
    run,
    shell_output,
    spec,
    start,
    wait_agent,
)
from tests.waiting import wait_until


def fly_settings(fake: FakeFly) -> FlySettings:
    return FlySettings(
        api_url=fake.url,
        logs_url=fake.url,
        api_token=TOKEN,
        edge=f"127.0.0.1:{fake.edge_port}",
        ca_file=str(fake.ca_file),
    )


def make_provider(fake: FakeFly, *, lease_wait: float = 60.0) -> FlyProvider:
    api = FlyApi(TOKEN, base_url=fake.url, logs_url=fake.url, timeout=10, lease_wait=lease_wait)
    return FlyProvider(api, fly_settings(fake))


@pytest.fixture
def provider(fake: FakeFly, sandboxes: None) -> Iterator[FlyProvider]:
    yield make_provider(fake)


@pytest.fixture
def elsewhere(fake: FakeFly) -> Iterator[FlyProvider]:
    """Another server with the same token: Fly machines are reachable from anywhere."""
    yield make_provider(fake)


class TestFlyContract(ProviderContract):
    machines_belong_to_a_host = False
    reports_its_operations = False


def apps_of(fake: FakeFly) -> set[str]:
    return set(fake.fleet.apps)


def test_create_finishes_what_a_crashed_create_began(fake: FakeFly) -> None:
    """The server died after making the app and volume: the next create reuses them."""
    provider, machine = make_provider(fake), spec()

    async def scenario() -> None:
        app = provider.app_name(machine.instance_id)
        await provider.api.create_app(app, "personal", network=app)
        await provider.api.create_volume(app, "home", "iad", 1)
        handle = await provider.create(machine)
        again = await provider.create(machine)
        assert again == handle
        assert len(await provider.api.list_volumes(app)) == 1
        assert len(await provider.api.list_machines(app)) == 1
        kinds = {ip["shared"] for ip in await provider.api.list_ips(app)}
        assert kinds == {True, False}  # shared v4 and a v6, so <app>.fly.dev resolves
        assert (await provider.status(handle)).state is MachineState.STOPPED
        await provider.destroy(handle)
        await provider.close()

    run(scenario())


def test_no_capacity_is_a_clear_error_with_fly_s_message(fake: FakeFly) -> None:
    fake.control("PUT", "/capacity/ams", {"error": "no machines left in ams today"})
    provider = make_provider(fake)

    async def scenario() -> None:
        machine = spec()
        with pytest.raises(ProviderError, match="no capacity in region ams") as raised:
            await provider.create(
                type(machine)(**{**machine.__dict__, "region": "ams"})  # a region of its own
            )
        assert "no machines left in ams today" in str(raised.value)
        await provider.destroy_unrecorded(machine.instance_id)
        await provider.close()

    run(scenario())
    assert not apps_of(fake)


def test_rate_limits_and_passing_failures_are_retried(fake: FakeFly) -> None:
    fake.fault(
        "POST",
        "^/v1/apps$",
        respond={
            "status": 429,
            "headers": {"Retry-After": "1"},
            "body": {"error": "rate limit exceeded"},
        },
    )
    fake.fault("POST", "/volumes$", respond={"status": 503, "body": {"error": "try again"}})
    provider = make_provider(fake)

    async def scenario() -> None:
        handle = await provider.create(spec())
        assert (await provider.status(handle)).state is MachineState.STOPPED
        await provider.destroy(handle)
        await provider.close()

    run(scenario())


def test_a_lease_held_by_someone_else_is_a_clear_error(fake: FakeFly) -> None:
    provider = make_provider(fake, lease_wait=1)

    async def scenario() -> None:
        handle = await provider.create(spec())
        machine_id = handle.data["machine"]
        fake.control(
            "POST",
            f"/apps/{handle.ref}/machines/{machine_id}/lease",
            {"owner": "ops@example.com", "ttl": 60},
        )
        with pytest.raises(ProviderError, match="holds the lease") as raised:
            await provider.start(handle, launch(secrets.token_urlsafe(16)))
        assert "ops@example.com" in str(raised.value)
        await provider.destroy(handle)
        await provider.close()

    run(scenario())


def test_destroy_leaves_no_app_machine_volume_or_process(fake: FakeFly, sandboxes: None) -> None:
    provider, secret = make_provider(fake), secrets.token_urlsafe(16)

    async def scenario() -> None:
        handle = await provider.create(spec())
        await start(provider, handle, launch(secret))
        await wait_agent(provider, handle, secret)
        machine_id = handle.data["machine"]
        volume = fake.fleet.apps[handle.ref].volumes[handle.data["volume"]]
        await provider.destroy(handle)
        assert handle.ref not in apps_of(fake)
        await wait_until(lambda: not machine_processes(machine_id), "the machine's processes end")
        assert not volume.path.exists()
        await provider.destroy(handle)  # idempotent
        await provider.close()

    run(scenario())


def test_secrets_never_reach_the_machine_config(fake: FakeFly, sandboxes: None) -> None:
    """The API shows the config back: it holds the guest secret's hash, never the secret or
    the model key, which arrive over the authenticated channel."""
    provider, secret = make_provider(fake), secrets.token_urlsafe(16)
    key = "sk-" + secrets.token_urlsafe(16)

    async def scenario() -> None:
        handle = await provider.create(spec())
        base = launch(secret)
        agent = type(base)(
            **{**base.__dict__, "agent_env": {"MODEL_KEY": key}, "secret_env": ("MODEL_KEY",)}
        )
        await start(provider, handle, agent)
        await wait_agent(provider, handle, secret)
        machine = await provider.api.get_machine(handle.ref, handle.data["machine"])
        assert secret not in str(machine) and key not in str(machine)
        # A stock image, into which the guest was written as a zip application.
        assert machine["config"]["init"]["cmd"] == ["python3", "/opt/gentity/guest.pyz"]
        out = await shell_output(provider, handle, secret, "echo key-$MODEL_KEY", f"key-{key}")
        assert f"key-{key}" in out  # the agent got it nonetheless
        await provider.destroy(handle)
        await provider.close()

    run(scenario())


def test_orphan_sweep_deletes_only_unknown_apps_of_ours(fake: FakeFly) -> None:
    provider = make_provider(fake)

    async def scenario() -> None:
        kept, orphan = spec(), spec()
        kept_handle = await provider.create(kept)
        orphan_handle = await provider.create(orphan)
        await provider.api.create_app("someone-elses-app", "personal")
        await provider.api.create_app("gentity-control-plane", "personal")  # ours, no instance
        order: list[str] = []
        list_apps = provider.api.list_apps

        async def listing(org_slug: str) -> list[dict[str, Any]]:
            order.append("list")
            return await list_apps(org_slug)

        async def known() -> set[str]:
            order.append("known")
            return {kept.instance_id}

        provider.api.list_apps = listing  # type: ignore[method-assign]  # a spy on the real call
        deleted = await provider.sweep(known)
        # Apps first, rows second: an app whose row is saved meanwhile is then known.
        assert order == ["list", "known"]
        assert deleted == [orphan_handle.ref]
        assert apps_of(fake) == {kept_handle.ref, "someone-elses-app", "gentity-control-plane"}
        assert await provider.sweep(known) == []
        await provider.destroy(kept_handle)
        await provider.close()

    run(scenario())


def test_a_refused_or_missing_token_stops_start_up_with_one_line(
    fake: FakeFly, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake.fault(
        "GET",
        "^/v1/tokens/current$",
        respond={"status": 401, "body": {"error": "Authenticate: token validation error"}},
    )
    for name, value in {"API_URL": fake.url, "API_TOKEN": TOKEN}.items():
        monkeypatch.setenv(f"GENTITY_FLY_{name}", value)
    settings = Settings(data_dir=tmp_path, compute_provider="fly")
    with pytest.raises(StartupError) as raised:
        asyncio.run(preflight(settings))
    message = str(raised.value)
    assert "GENTITY_FLY_API_TOKEN" in message and "token validation error" in message
    assert "\n" not in message and TOKEN not in message
    asyncio.run(preflight(settings))  # the fault is spent: a good token passes
    monkeypatch.delenv("GENTITY_FLY_API_TOKEN")
    with pytest.raises(StartupError, match="needs GENTITY_FLY_API_TOKEN"):
        asyncio.run(preflight(settings))


def test_the_plugin_is_registered_as_fly(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("GENTITY_FLY_API_TOKEN", "fo1_x")
    made = load("fly").create(Settings(data_dir=tmp_path))
    assert isinstance(made, FlyProvider) and made.name == "fly"
    run(made.close())


def test_a_stopped_instance_s_log_comes_from_fly_s_logs_api(fake: FakeFly, sandboxes: None) -> None:
    provider, secret = make_provider(fake), secrets.token_urlsafe(16)

    async def scenario() -> None:
        handle = await start(provider, await provider.create(spec()), launch(secret))
        await wait_agent(provider, handle, secret)
        await shell_output(provider, handle, secret, "echo said-$((6*7))", "said-42")
        await provider.stop(handle)
        records = await provider.tail_stopped(handle, 50)
        assert any("said-42" in r["message"] for r in records), records
        assert len(await provider.tail_stopped(handle, 1)) == 1
        await provider.destroy(handle)
        assert await provider.tail_stopped(handle, 50) == []  # its app is gone
        await provider.close()

    run(scenario())


def test_a_guest_image_runs_its_own_guest(tmp_path: Path, sandboxes: None) -> None:
    """With ``GENTITY_FLY_IMAGE`` the machine runs the image's command, and nothing is written
    into it; the fake stands in for the image with this package's own interpreter."""
    image = "registry.fly.io/gentity-images/guest:1"
    app = create_app(
        tmp_path / "fakefly",
        ca_file=tmp_path / "ca.pem",
        images={image: [sys.executable, "-m", "gentity.guest"]},
    )
    server = LiveServer(app).start()
    fake = FakeFly(server, tmp_path / "ca.pem", tmp_path / "fakefly")
    settings = fly_settings(fake).model_copy(update={"image": image})
    api = FlyApi(TOKEN, base_url=fake.url, logs_url=fake.url, timeout=10)
    provider, secret = FlyProvider(api, settings), secrets.token_urlsafe(16)

    async def scenario() -> None:
        handle = await start(provider, await provider.create(spec()), launch(secret))
        await wait_agent(provider, handle, secret)
        config = (await api.get_machine(handle.ref, handle.data["machine"]))["config"]
        assert config["image"] == image
        assert "files" not in config and "init" not in config
        out = await shell_output(provider, handle, secret, "echo img-$((3*3))", "img-9")
        assert "img-9" in out
        await provider.destroy(handle)
        await provider.close()

    try:
        run(scenario())
    finally:
        server.stop()


def _npm_package(path: Path) -> None:
    """A one-command npm package as a tarball (no dependencies: installs offline)."""
    files = {
        "package/package.json": b'{"name": "hello-agent", "version": "1.0.0",'
        b' "bin": {"hello-agent": "bin.js"}}',
        "package/bin.js": b'#!/usr/bin/env node\nconsole.log("hello-" + (6 * 7));\n',
    }
    with tarfile.open(path, "w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o755
            archive.addfile(info, io.BytesIO(data))


def test_on_a_stock_image_the_guest_installs_the_agent_into_the_volume(
    fake: FakeFly, sandboxes: None
) -> None:
    require(shutil.which("npm") is not None, "npm")
    provider, secret = make_provider(fake), secrets.token_urlsafe(16)

    async def scenario() -> None:
        handle = await provider.create(spec())
        volume = fake.fleet.apps[handle.ref].volumes[handle.data["volume"]]
        _npm_package(volume.path / "hello-agent.tgz")  # at /home/agent in the machine
        agent = GuestLaunch(
            agent="hello",
            command=["bash", "--norc", "-i"],
            secret=secret,
            install=InstallStep(npm="/home/agent/hello-agent.tgz"),
        )
        await start(provider, handle, agent)
        health = await wait_agent(provider, handle, secret)
        assert health["state"] == "running", health
        out = await shell_output(provider, handle, secret, "hello-agent", "hello-42")
        assert "hello-42" in out
        assert (volume.path / ".gentity/agents/hello/.installed").exists()
        await provider.destroy(handle)
        await provider.close()

    run(scenario())
