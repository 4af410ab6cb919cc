"""The provider registry: entry-point discovery, per-provider settings, several providers."""

from __future__ import annotations

import asyncio
import sys
import textwrap
from collections.abc import Callable, Iterator
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from gentity.providers.compute import registry
from gentity.providers.compute.base import MachineHandle, ProviderUnavailable
from gentity.providers.compute.local.provider import LocalProvider
from gentity.providers.compute.registry import Providers
from gentity.server.app import create_app
from gentity.settings import Settings
from tests.conftest import LiveServer

# A plugin package as a third party would ship it: a module and the distribution metadata that
# declares its entry point. Its provider refuses every operation; only its settings, warnings
# and life cycle are looked at here.
_PLUGIN_MODULE = """
from pydantic_settings import SettingsConfigDict

from gentity.providers.compute.base import ComputeProvider, ProviderError
from gentity.providers.compute.registry import ProviderPlugin, ProviderSettings


class EchoSettings(ProviderSettings):
    model_config = SettingsConfigDict(env_prefix="GENTITY_ECHO_", extra="ignore", frozen=True)
    region: str = "nowhere"


class EchoProvider(ComputeProvider):
    name = "echo"

    def __init__(self, region):
        self.region = region
        self.adopted = self.closed = False

    def isolation_warnings(self):
        return [f"echo machines in {self.region} are not isolated"]

    async def adopt(self):
        self.adopted = True

    async def close(self):
        self.closed = True
        raise RuntimeError("echo could not close")

    async def _refuse(self, *args, **kwargs):
        raise ProviderError("echo does not run machines")

    create = start = stop = destroy = destroy_unrecorded = status = tail_stopped = _refuse

    def guest_endpoint(self, handle):
        raise ProviderError("echo does not run machines")

    def guest_layout(self, handle, launch):
        raise ProviderError("echo does not run machines")


plugin = ProviderPlugin(
    settings=EchoSettings, build=lambda settings, own: EchoProvider(own.region)
)
"""


@pytest.fixture
def echo_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Install the plugin package on ``sys.path``, where ``importlib.metadata`` finds it."""
    site = tmp_path / "site"
    (site / "gentity_echo").mkdir(parents=True)
    (site / "gentity_echo" / "__init__.py").write_text(textwrap.dedent(_PLUGIN_MODULE))
    info = site / "gentity_echo-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: gentity-echo\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[gentity.compute_providers]\necho = gentity_echo:plugin\n"
    )
    monkeypatch.syspath_prepend(str(site))
    # Instances of the default provider need no warm spare here.
    monkeypatch.setenv("GENTITY_LOCAL_WARM_SPARES", "0")
    yield
    sys.modules.pop("gentity_echo", None)


def _settings(tmp_path: Path, **values: str) -> Settings:
    return Settings(data_dir=tmp_path / "data", **values)  # type: ignore[arg-type]


def test_the_built_in_provider_is_declared_as_an_entry_point() -> None:
    declared = {point.name: point.value for point in entry_points(group=registry.ENTRY_POINT_GROUP)}
    assert declared["local"] == "gentity.providers.compute.local.plugin:plugin"
    assert registry.load("local").build == LocalProvider.from_settings


def test_built_in_providers_are_found_with_stale_metadata(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(registry, "entry_points", lambda group: [])
    assert registry.available() == ["local"]
    assert isinstance(Providers.from_settings(_settings(tmp_path)).default, LocalProvider)


def test_a_plugin_package_adds_a_provider_with_settings_of_its_own(
    echo_plugin: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert registry.available() == ["echo", "fly", "local"]
    monkeypatch.setenv("GENTITY_ECHO_REGION", "mars")
    monkeypatch.setenv("GENTITY_LOCAL_UID_RANGE", "2000000-2000099")
    providers = Providers.from_settings(_settings(tmp_path, compute_providers="echo"))
    assert providers.names == ["local", "echo"]
    assert isinstance(providers.default, LocalProvider)
    assert providers.default.uid_range == (2_000_000, 2_000_099)
    echo = providers.get("echo")
    assert echo.name == "echo"
    assert echo.region == "mars"  # type: ignore[attr-defined]
    # The core settings know nothing of the plugin's.
    assert not any("region" in name for name in Settings.model_fields)


def test_the_default_provider_can_be_a_plugin(echo_plugin: None, tmp_path: Path) -> None:
    providers = Providers.from_settings(
        _settings(tmp_path, compute_provider="echo", compute_providers="local, echo")
    )
    assert providers.names == ["echo", "local"]
    assert providers.default.name == "echo"
    assert [p.name for p in providers] == ["echo", "local"]


def test_an_unknown_provider_stops_the_server_at_start_up(tmp_path: Path) -> None:
    with pytest.raises(
        ValueError, match=r"unknown compute provider 'nomad' \(installed: fly, local\)"
    ):
        create_app(_settings(tmp_path, compute_provider="nomad"))
    with pytest.raises(ValueError, match="unknown compute provider 'kube'"):
        Providers.from_settings(_settings(tmp_path, compute_providers="local,kube"))
    with pytest.raises(ValidationError, match="not a compute provider name"):
        _settings(tmp_path, compute_provider="local,fly")


def test_invalid_provider_settings_stop_the_server_at_start_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GENTITY_LOCAL_UID_RANGE", "10-5")
    with pytest.raises(ValidationError, match="uid_range"):
        Providers.from_settings(_settings(tmp_path))


def test_a_provider_this_server_does_not_run_is_unavailable(tmp_path: Path) -> None:
    providers = Providers.from_settings(_settings(tmp_path))
    with pytest.raises(ProviderUnavailable, match=r"does not run the 'fly' .*\(it runs: local\)"):
        providers.get("fly")
    with pytest.raises(ProviderUnavailable, match="'fly'"):
        providers.reachable("fly", MachineHandle(ref="x"))


def test_a_machine_of_another_host_is_unavailable(tmp_path: Path) -> None:
    here = Providers({"local": LocalProvider(tmp_path / "here")}, "local")
    theirs = MachineHandle(ref="cl-x", data={"host": "f00d", "hostName": "web-2"})
    with pytest.raises(ProviderUnavailable, match=r"instance cl-x runs on web-2 \(f00d\)"):
        here.reachable("local", theirs)
    assert here.reachable("local", MachineHandle(ref="cl-y")) is here.default  # made before


def test_a_provider_must_call_itself_by_its_registered_name(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="registered as 'fly' calls itself 'local'"):
        Providers({"fly": LocalProvider(tmp_path)}, "fly")


def test_a_name_registered_twice_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    group = registry.ENTRY_POINT_GROUP
    twice = [
        EntryPoint("local", "gentity.providers.compute.local.plugin:plugin", group),
        EntryPoint("local", "elsewhere:plugin", group),
    ]
    monkeypatch.setattr(registry, "entry_points", lambda group: twice)
    with pytest.raises(ValueError, match="'local' is registered twice"):
        registry.available()


def test_an_entry_point_must_name_a_plugin(monkeypatch: pytest.MonkeyPatch) -> None:
    point = EntryPoint("odd", "gentity.settings:Settings", registry.ENTRY_POINT_GROUP)
    monkeypatch.setattr(registry, "entry_points", lambda group: [point])
    with pytest.raises(TypeError, match="is not a ProviderPlugin"):
        registry.load("odd")


def test_every_provider_is_adopted_and_closed(echo_plugin: None, tmp_path: Path) -> None:
    providers = Providers.from_settings(_settings(tmp_path, compute_providers="echo"))
    local, echo = providers.get("local"), providers.get("echo")
    assert isinstance(local, LocalProvider)
    asyncio.run(providers.adopt())
    assert echo.adopted  # type: ignore[attr-defined]
    # The echo provider fails to close: it is logged, and the others are closed all the same.
    providers = Providers({"echo": echo, "local": local}, "echo")
    asyncio.run(providers.close())
    assert echo.closed  # type: ignore[attr-defined]
    assert local._spares.closed


def test_warnings_name_their_provider_when_there_are_several(
    echo_plugin: None, tmp_path: Path
) -> None:
    alone = Providers.from_settings(_settings(tmp_path, compute_provider="echo"))
    assert alone.isolation_warnings() == ["echo machines in nowhere are not isolated"]
    both = Providers.from_settings(_settings(tmp_path, compute_providers="echo"))
    warnings = both.isolation_warnings()
    assert "echo: echo machines in nowhere are not isolated" in warnings
    assert all(w.startswith(("local: ", "echo: ")) for w in warnings)


def test_readyz_lists_every_providers_warnings(
    echo_plugin: None,
    server_factory: Callable[[Settings], LiveServer],
    settings_factory: Callable[..., Settings],
) -> None:
    server = server_factory(settings_factory(compute_providers="echo"))
    ctx = server.app.state.ctx
    assert isinstance(ctx.providers.default, LocalProvider)
    ready = httpx.get(f"{server.url}/readyz", timeout=10).json()
    assert "echo: echo machines in nowhere are not isolated" in ready["detail"]
