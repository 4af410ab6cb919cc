"""The local provider: the shared contract, plus isolation, limits and detachment."""

from __future__ import annotations

import secrets
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from gentity.guest import client as guest_client
from gentity.providers.compute.base import MachineState
from gentity.providers.compute.local import network
from gentity.providers.compute.local.cgroups import InstanceCgroup, capabilities
from gentity.providers.compute.local.provider import LocalProvider
from gentity.providers.compute.local.sandbox import bwrap_path
from tests.conftest import require
from tests.providers.contract import (
    ProviderContract,
    launch,
    run,
    shell_output,
    spec,
    start,
    wait_agent,
)


@pytest.fixture
def provider(tmp_path: Path) -> LocalProvider:
    return LocalProvider(tmp_path / "data")


@pytest.fixture
def elsewhere(tmp_path: Path) -> LocalProvider:
    """A server on another host: a data directory of its own, so an owner of its own."""
    return LocalProvider(tmp_path / "elsewhere")


class TestLocalContract(ProviderContract):
    machines_belong_to_a_host = True
    reports_its_operations = True


def test_processes_outlive_the_provider_object(tmp_path: Path) -> None:
    """A new server process (a new provider object) finds running instances again."""
    secret = secrets.token_urlsafe(16)

    async def scenario() -> None:
        first = LocalProvider(tmp_path / "data")
        handle = await first.create(spec())
        await start(first, handle, launch(secret))
        await wait_agent(first, handle, secret)
        second = LocalProvider(tmp_path / "data")
        assert (await second.status(handle)).state is MachineState.RUNNING
        await wait_agent(second, handle, secret)
        await second.destroy(handle)
        assert not (tmp_path / "data" / "instances" / handle.ref).exists()

    run(scenario())


def test_the_hostname_is_the_subdomain_after_every_start(provider: LocalProvider) -> None:
    """A prompt shows the same name whether the machine booted warm, cold, or restarted."""
    require(bwrap_path() is not None, "bubblewrap")
    secret = secrets.token_urlsafe(16)

    async def hostname(handle: Any) -> str:
        await wait_agent(provider, handle, secret)
        # The typed line is echoed too: only the output has the product in it.
        out = await shell_output(provider, handle, secret, "echo host=$(hostname)=$((6*7))", "=42")
        return out.rsplit("host=", 1)[1].split("=42", 1)[0]

    async def scenario() -> None:
        machine = spec()
        handle = await provider.create(machine)
        handle = await start(provider, handle, launch(secret))
        assert await hostname(handle) == machine.subdomain
        await provider.stop(handle)
        handle = await start(provider, handle, launch(secret))
        assert await hostname(handle) == machine.subdomain
        handle = await start(provider, handle, launch(secret), restart=True)
        assert await hostname(handle) == machine.subdomain
        await provider.destroy(handle)

    run(scenario())


def test_limits_are_applied_and_destroy_leaves_nothing(provider: LocalProvider) -> None:
    require(bool(capabilities().v1), "writable cgroup v1 controllers")
    secret = secrets.token_urlsafe(16)

    async def scenario() -> None:
        machine = spec()
        handle = await provider.create(machine)
        await start(provider, handle, launch(secret))
        await wait_agent(provider, handle, secret)
        cgroup = InstanceCgroup(handle.ref)
        pids = cgroup.pids()
        assert pids
        if "memory" in cgroup.v1:
            limit = int((cgroup.v1["memory"] / "memory.limit_in_bytes").read_text())
            assert limit == machine.memory_mb * 1024 * 1024
        if "cpu" in cgroup.v1:
            assert int((cgroup.v1["cpu"] / "cpu.cfs_quota_us").read_text()) == 100_000
        await provider.destroy(handle)
        for pid in pids:
            assert not Path(f"/proc/{pid}").exists() or _zombie(pid)
        assert not any(p.exists() for p in cgroup.v1.values())

    run(scenario())


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_sandbox_hides_the_host_and_other_instances(tmp_path: Path) -> None:
    require(bwrap_path() is not None, "bubblewrap")
    secret = secrets.token_urlsafe(16)
    data = tmp_path / "data"
    (data / "secret.key").parent.mkdir(parents=True)
    (data / "secret.key").write_text("do-not-read")

    async def scenario() -> None:
        provider = LocalProvider(data)
        a = await provider.create(spec())
        b = await provider.create(spec())
        try:
            await start(provider, a, launch(secret))
            await wait_agent(provider, a, secret)
            out = await shell_output(
                provider,
                a,
                secret,
                f"cat {data}/secret.key; ls {data}/instances; touch /usr/x; "
                "ps -e -o pid= | wc -l; echo end-$((2+3))",
                "end-5",
            )
            assert "do-not-read" not in out
            assert b.ref not in out  # the other instance's directory is invisible
            assert "Read-only file system" in out or "Permission denied" in out
            process_count = int(out.split("end-5")[0].strip().splitlines()[-1].strip())
            assert process_count < 10  # its own PID namespace, not the host's processes
        finally:
            await provider.destroy(a)
            await provider.destroy(b)

    run(scenario())


def test_the_agent_has_scratch_space_of_its_own(tmp_path: Path) -> None:
    """/tmp and /var/tmp are the instance's own and writable by its agent (which is not root
    outside the sandbox); what the host keeps there stays out of sight."""
    require(bwrap_path() is not None, "bubblewrap")
    secret = secrets.token_urlsafe(16)
    host_file = Path("/var/tmp") / f"gentity-host-{secrets.token_hex(4)}"
    host_file.write_text("host-only")

    async def scenario() -> None:
        provider = LocalProvider(tmp_path / "data")
        handle = await provider.create(spec())
        try:
            await start(provider, handle, launch(secret))
            await wait_agent(provider, handle, secret)
            out = await shell_output(
                provider,
                handle,
                secret,
                f"mkdir /tmp/agent-1 && echo a > /var/tmp/b && cat {host_file}; "
                "stat -c %a /tmp /var/tmp | tr '\\n' ' '; echo end-$((2+3))",
                "end-5",
            )
            answer = out.split("end-$((2+3))")[-1]
            assert "Permission denied" not in answer and "Read-only" not in answer, answer
            assert "host-only" not in answer
            assert "1777 1777" in answer
        finally:
            await provider.destroy(handle)

    try:
        run(scenario())
    finally:
        host_file.unlink()


def test_guest_environment_has_no_server_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GENTITY_SECRET_KEY", "server-only-secret")
    secret = secrets.token_urlsafe(16)

    async def scenario() -> None:
        provider = LocalProvider(tmp_path / "data")
        handle = await provider.create(spec())
        try:
            await start(provider, handle, launch(secret))
            await wait_agent(provider, handle, secret)
            out = await shell_output(provider, handle, secret, "env; echo env-done", "env-done")
            assert "server-only-secret" not in out
            assert "GENTITY_SECRET_KEY" not in out
            health = await guest_client.health(provider.guest_endpoint(handle), secret)
            assert health["state"] == "running"
        finally:
            await provider.destroy(handle)

    run(scenario())


def test_missing_instance_directory_is_missing(provider: LocalProvider) -> None:
    from gentity.providers.compute.base import MachineHandle

    async def scenario() -> None:
        handle = MachineHandle(ref="c" + "0" * 24, data={"cpus": 1, "memoryMb": 512})
        assert (await provider.status(handle)).state is MachineState.MISSING
        await provider.stop(handle)
        await provider.destroy(handle)

    run(scenario())


def test_abandoned_empty_spare_groups_are_swept(tmp_path: Path) -> None:
    """Old empty groups of this data directory's spares go; another data directory's stay."""
    require(bool(capabilities().v1), "writable cgroup v1 controllers")
    from gentity.providers.compute.local.cgroups import spare_prefix, sweep_abandoned_spare_groups

    ours, theirs = spare_prefix(tmp_path / "ours"), spare_prefix(tmp_path / "theirs")
    left = InstanceCgroup(ours + secrets.token_hex(4))
    left.create(cpus=1, memory_mb=64)
    fresh = InstanceCgroup(ours + secrets.token_hex(4))
    fresh.create(cpus=1, memory_mb=64)
    other = InstanceCgroup(theirs + secrets.token_hex(4))
    other.create(cpus=1, memory_mb=64)
    try:
        sweep_abandoned_spare_groups(ours, min_age_seconds=3600)
        assert all(p.exists() for p in [*left.v1.values(), *fresh.v1.values()])  # too young
        sweep_abandoned_spare_groups(ours, min_age_seconds=0)
        assert not any(p.exists() for p in [*left.v1.values(), *fresh.v1.values()])
        assert all(p.exists() for p in other.v1.values())
    finally:
        for group in (left, fresh, other):
            group.remove()


def test_an_instance_from_before_the_disk_layout_starts_with_its_files(
    provider: LocalProvider,
) -> None:
    """Instances made before volumes moved under ``disk/`` keep their files and can write."""
    secret = secrets.token_urlsafe(16)

    async def scenario() -> None:
        handle = await provider.create(spec())
        root = provider.paths(handle).root
        (root / "volume").mkdir()
        (root / "volume" / "notes.txt").write_text("from before\n")  # owned by root
        (root / "logs").mkdir()
        await start(provider, handle, launch(secret))
        await wait_agent(provider, handle, secret)
        out = await shell_output(
            provider,
            handle,
            secret,
            "cat notes.txt && echo more >> notes.txt && echo appended-$((2+3))",
            "appended-5",
        )
        assert "from before" in out
        assert (provider.paths(handle).volume / "notes.txt").read_text() == "from before\nmore\n"
        await provider.destroy(handle)
        assert not root.exists()

    run(scenario())


def test_a_guest_that_dies_before_its_config_is_reported(
    provider: LocalProvider, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The error says how the guest ended, and the server's log what it printed last."""
    from gentity.catalog import InstallStep
    from gentity.providers.compute.base import ProviderError
    from gentity.providers.compute.local import processes
    from gentity.providers.compute.local import provider as local_provider

    secret = secrets.token_urlsafe(16)

    async def scenario() -> None:
        handle = await provider.create(spec())

        async def kill_the_sandbox(*_: object) -> None:
            # The install runs while the guest waits for its bootstrap: end the guest then.
            with provider.paths(handle).guest_output.open("ab") as out:
                out.write(b"last words\n")
            for pid in provider._pids(handle):
                processes.kill_tree(processes.tree(pid))

        monkeypatch.setattr(local_provider, "ensure_installed", kill_the_sandbox)
        # The sandbox's first process dies of the signal, or exits with the guest's status.
        ended = r"the guest daemon (was killed by SIGKILL|exited with code 137) before it got"
        with pytest.raises(ProviderError, match=ended):
            await provider.start(handle, replace(launch(secret), install=InstallStep(npm="x")))
        assert "last words" in caplog.text
        await provider.destroy(handle)

    run(scenario())


def test_the_network_is_attached_once_the_sandbox_is_complete(
    provider: LocalProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    """slirp4netns brings the sandbox's loopback up; bubblewrap, finding lo up before its own
    loopback set-up, fails ("Failed RTM_NEWADDR"), now and then, under load. So the network
    is attached only after the guest says it waits for its config."""
    require(provider.own_network, "bubblewrap and slirp4netns")
    secret = secrets.token_urlsafe(16)
    real_attach = network.attach
    guest_was_waiting: list[bool] = []

    async def scenario() -> None:
        handle = await provider.create(spec())

        def attach(*args: Any) -> None:
            output = provider.paths(handle).guest_output.read_bytes()
            guest_was_waiting.append(b'"waiting"' in output)
            real_attach(*args)

        monkeypatch.setattr(network, "attach", attach)
        await start(provider, handle, launch(secret))
        await wait_agent(provider, handle, secret)
        await provider.destroy(handle)

    run(scenario())
    assert guest_was_waiting == [True]


def test_a_failed_start_keeps_the_instances_files(
    provider: LocalProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    require(provider.own_network, "bubblewrap and slirp4netns")
    from gentity.providers.compute.base import ProviderError

    secret = secrets.token_urlsafe(16)

    def fail(*_: object) -> None:
        raise network.NetworkError("the instance's network did not come up")

    async def scenario() -> None:
        handle = await provider.create(spec())
        await start(provider, handle, launch(secret))
        await wait_agent(provider, handle, secret)
        await shell_output(provider, handle, secret, "echo kept > notes; echo w-$((1+1))", "w-2")
        await provider.stop(handle)
        with monkeypatch.context() as patch:
            patch.setattr(network, "attach", fail)
            with pytest.raises(ProviderError, match="network did not come up"):
                await provider.start(handle, launch(secret))
        assert (await provider.status(handle)).state is MachineState.STOPPED
        assert (provider.paths(handle).volume / "notes").read_text() == "kept\n"
        await start(provider, handle, launch(secret))
        await wait_agent(provider, handle, secret)
        await provider.destroy(handle)

    run(scenario())


def test_the_guest_is_compiled_for_sandboxes_that_cannot_write_bytecode() -> None:
    """The guest cannot write its own bytecode (its package is read-only inside): the
    provider writes it, so no sandbox compiles the guest again as it boots."""
    import importlib.util

    import gentity
    from gentity.providers.compute.local import sandbox

    source = Path(gentity.__file__).parent / "guest" / "daemon.py"
    cached = Path(importlib.util.cache_from_source(str(source)))
    cached.unlink(missing_ok=True)
    sandbox.compile_guest.__wrapped__()
    assert cached.is_file()
    assert cached.stat().st_mtime >= source.stat().st_mtime
