"""The local provider's installs with the real npm and pip: progress in the instance's log,
install scripts that run, and a failure that names its cause. No network: packages come from
a tarball made here, and the registries are pointed at a closed port, through the operator's
own npm/pip variables, which is how an install gets its registry settings."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import zipfile
from pathlib import Path

import anyio
import pytest

from gentity.catalog import InstallStep
from gentity.guest.logreader import tail
from gentity.guest.logwriter import LogWriter
from gentity.guest.redact import Redactor
from gentity.providers.compute.local.install import (
    AgentInstallError,
    InstallSandbox,
    bin_dir,
    ensure_installed,
)

pytestmark = pytest.mark.anyio

CLOSED = "http://127.0.0.1:1"


def _sandbox(tmp_path: Path) -> InstallSandbox:
    """The installs run sandboxed, as the local provider runs them, as a uid of this range."""
    return InstallSandbox(tmp_path, uid_range=(1_900_000, 1_999_999))


def _records(path: Path) -> list[tuple[str, str]]:
    return [(r["level"], r["message"]) for r in tail(path, 1000)]


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """npm and pip with nothing to reach but a closed port, and no retries."""
    monkeypatch.setenv("npm_config_registry", f"{CLOSED}/")
    monkeypatch.setenv("npm_config_fetch_retries", "0")
    monkeypatch.setenv("npm_config_update_notifier", "false")
    for name in ("PIP_FIND_LINKS", "PIP_EXTRA_INDEX_URL", "PIP_CONSTRAINT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PIP_CONFIG_FILE", "/dev/null")  # this host's pip.conf adds indexes
    monkeypatch.setenv("PIP_INDEX_URL", f"{CLOSED}/simple")
    monkeypatch.setenv("PIP_RETRIES", "1")


def _pack(tmp_path: Path) -> Path:
    """A tiny npm package whose postinstall leaves a file, links its CLI under a second name
    (as Claude Code's does with its binary) and says so."""
    source = tmp_path / "probe"
    source.mkdir()
    script = (
        "require('fs').writeFileSync('postinstall-ran', 'yes');"
        "require('fs').linkSync('cli.js', 'cli-linked.js');"
        "console.log('probe: postinstall ran')"
    )
    (source / "package.json").write_text(
        json.dumps(
            {
                "name": "gentity-probe-agent",
                "version": "1.0.0",
                "bin": {"probe-agent": "cli.js"},
                "scripts": {"postinstall": f'node -e "{script}"'},
            }
        )
    )
    (source / "cli.js").write_text("#!/usr/bin/env node\nconsole.log('probe agent')\n")
    out = subprocess.run(
        ["npm", "pack", "--pack-destination", str(tmp_path)],
        cwd=source,
        capture_output=True,
        text=True,
        check=True,
    )
    return tmp_path / out.stdout.strip().splitlines()[-1]


async def test_npm_runs_the_packages_install_scripts_with_their_output_in_the_log(
    tmp_path: Path, offline: None
) -> None:
    tarball = _pack(tmp_path)
    agents, log_file = tmp_path / "agents", tmp_path / "instance.log"
    step = InstallStep(npm=str(tarball))
    with LogWriter(log_file) as log:
        await ensure_installed(agents, "probe", step, log, _sandbox(tmp_path))
    package = bin_dir(agents, "probe", step).parent / "lib" / "node_modules" / "gentity-probe-agent"
    assert (package / "postinstall-ran").read_text() == "yes"
    linked = (package / "cli-linked.js").stat()
    assert linked.st_ino == (package / "cli.js").stat().st_ino and linked.st_uid == 0
    assert (bin_dir(agents, "probe", step) / "probe-agent").exists()
    messages = [m for _, m in _records(log_file)]
    assert "install: probe: postinstall ran" in messages  # --foreground-scripts
    assert messages[-1] == "install: done"


async def test_an_unreachable_npm_registry_is_the_error_and_logged_at_error(
    tmp_path: Path, offline: None
) -> None:
    agents, log_file = tmp_path / "agents", tmp_path / "instance.log"
    step = InstallStep(npm="gentity-no-such-agent", version="1.2.3")
    with LogWriter(log_file) as log, pytest.raises(AgentInstallError) as raised:
        await ensure_installed(agents, "probe", step, log, _sandbox(tmp_path))
    assert str(raised.value) == "install failed: npm: ECONNREFUSED reaching the registry"
    records = _records(log_file)
    # The pin reaches the command, and the cause is the one record at ERROR.
    running = [m for _, m in records if m.startswith("install: running npm install")]
    assert len(running) == 1 and running[0].endswith(" gentity-no-such-agent@1.2.3")
    assert [r for r in records if r[0] == "error"] == [("error", str(raised.value))]
    assert not (agents / step.cache_name("probe") / ".installed").exists()


async def test_a_missing_pypi_package_is_the_error_with_the_index_unreachable(
    tmp_path: Path, offline: None
) -> None:
    agents, log_file = tmp_path / "agents", tmp_path / "instance.log"
    step = InstallStep(pypi="gentity-no-such-agent", version="9.9")
    with LogWriter(log_file) as log, pytest.raises(AgentInstallError) as raised:
        await ensure_installed(agents, "probe", step, log, _sandbox(tmp_path))
    assert str(raised.value) == (
        "install failed: pip: No matching distribution found for gentity-no-such-agent==9.9; "
        "the package index could not be reached"
    )
    records = _records(log_file)
    assert ("error", str(raised.value)) in records
    # pip without --quiet: its own lines are in the log.
    assert ("info", f"install: Looking in indexes: {CLOSED}/simple") in records


async def test_the_cause_is_redacted_like_every_record(
    tmp_path: Path, offline: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "sk-install-canary-0123456789"
    monkeypatch.setenv("PIP_INDEX_URL", f"{CLOSED}/simple")
    agents, log_file = tmp_path / "agents", tmp_path / "instance.log"
    step = InstallStep(pypi=f"x{secret}", version="1.0")
    with LogWriter(log_file, redact=Redactor([secret])) as log, pytest.raises(AgentInstallError):
        await ensure_installed(agents, "probe", step, log, _sandbox(tmp_path))
    assert secret not in log_file.read_text()
    assert (
        "error",
        "install failed: pip: No matching distribution found for x[redacted]==1.0; "
        "the package index could not be reached",
    ) in _records(log_file)


_HOSTILE = """
const fs = require('fs'), net = require('net');
const out = (k, v) => console.log(`probe: ${k}=${v}`);
function tryWrite(k, p) {
  try { fs.writeFileSync(p, 'pwned'); out(k, 'WROTE'); } catch (e) { out(k, e.code); }
}
function tryRead(k, p) {
  try { fs.readFileSync(p); out(k, 'READ'); } catch (e) { out(k, e.code); }
}
tryWrite('etc', '/etc/gentity-install-escape');
tryWrite('data', DATA + '/pwned');
tryRead('db', DATA + '/gentity.db');
tryRead('key', KEY);
tryRead('home', HOME_FILE);
tryWrite('target', 'postinstall-ran');
const map = fs.readFileSync('/proc/self/uid_map', 'utf8').trim().split(/\\s+/);
out('uid', map[1]);
function probe(k, host) {
  return new Promise((done) => {
    const s = net.connect({ host, port: PORT, timeout: 3000 });
    s.on('connect', () => { out(k, 'CONNECTED'); s.destroy(); done(); });
    s.on('error', (e) => { out(k, e.code); done(); });
    s.on('timeout', () => { out(k, 'TIMEOUT'); s.destroy(); done(); });
  });
}
(async () => { await probe('loopback', '127.0.0.1'); await probe('gateway', '10.0.2.2'); })();
"""


def _pack_hostile(tmp_path: Path, data: Path, key: Path, home_file: Path, port: int) -> Path:
    """A package whose install script tries its way out, and says how each try went."""
    source = tmp_path / "hostile"
    source.mkdir()
    script = (
        _HOSTILE.replace("DATA", json.dumps(str(data)))
        .replace("KEY", json.dumps(str(key)))
        .replace("HOME_FILE", json.dumps(str(home_file)))
        .replace("PORT", str(port))
    )
    (source / "postinstall.js").write_text(script)
    (source / "package.json").write_text(
        json.dumps(
            {
                "name": "gentity-hostile-agent",
                "version": "1.0.0",
                "bin": {"hostile-agent": "cli.js"},
                "scripts": {"postinstall": "node postinstall.js"},
            }
        )
    )
    (source / "cli.js").write_text("#!/usr/bin/env node\nconsole.log('hostile agent')\n")
    out = subprocess.run(
        ["npm", "pack", "--pack-destination", str(tmp_path)],
        cwd=source,
        capture_output=True,
        text=True,
        check=True,
    )
    return tmp_path / out.stdout.strip().splitlines()[-1]


async def test_an_install_script_reaches_nothing_but_its_target_and_the_result_is_sealed(
    tmp_path: Path, offline: None
) -> None:
    data, keys = tmp_path / "data", tmp_path / "keys"
    data.mkdir()
    keys.mkdir(mode=0o700)
    (data / "gentity.db").write_text("the database")
    (keys / "secret.key").write_text("the key")
    home_file = Path.home() / f".gentity-install-test-{os.getpid()}"
    home_file.write_text("the operator's")
    host = socket.socket()
    host.bind(("127.0.0.1", 0))
    host.listen(8)
    try:
        port = host.getsockname()[1]
        tarball = _pack_hostile(tmp_path, data, keys / "secret.key", home_file, port)
        agents, log_file = data / "agents", tmp_path / "instance.log"
        step = InstallStep(npm=str(tarball))
        sandbox = InstallSandbox(data, key_dir=keys, uid_range=(1_900_000, 1_999_999))
        with LogWriter(log_file) as log:
            await ensure_installed(agents, "hostile", step, log, sandbox)
    finally:
        host.close()
        home_file.unlink()
    found = dict(
        m.removeprefix("install: probe: ").split("=", 1)
        for _, m in _records(log_file)
        if m.startswith("install: probe: ")
    )
    assert found["target"] == "WROTE"
    assert found["etc"] in {"EROFS", "EACCES"}
    assert found["data"] in {"EROFS", "EACCES", "ENOENT"}
    assert found["db"] == found["key"] == found["home"] == "ENOENT"  # hidden
    assert found["loopback"] == "ECONNREFUSED"  # the sandbox's own loopback
    assert found["gateway"] in {"ECONNREFUSED", "TIMEOUT", "ENETUNREACH", "EHOSTUNREACH"}
    assert 1_900_000 <= int(found["uid"]) <= 1_999_999  # an unprivileged uid on the host
    assert not Path("/etc/gentity-install-escape").exists()
    assert not (data / "pwned").exists()
    # The result, in place: root's, and nobody's to write, not even root's by its mode.
    cache = agents / step.cache_name("hostile")
    package = cache / "lib" / "node_modules" / "gentity-hostile-agent"
    assert (package / "postinstall-ran").read_text() == "pwned"
    assert (cache / "bin" / "hostile-agent").is_symlink()
    assert (cache / ".installed").exists()
    for entry in [cache, *cache.rglob("*")]:
        info = entry.lstat()
        assert (info.st_uid, info.st_gid) == (0, 0), entry
        if not entry.is_symlink():
            assert info.st_mode & 0o7222 == 0, entry
    # Nothing left of the attempt beside it.
    assert sorted(p.name for p in agents.iterdir()) == [cache.name, f"{cache.name}.lock"]


async def test_an_install_past_its_time_is_killed_with_everything_it_started(
    tmp_path: Path, offline: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("gentity.providers.compute.local.install.INSTALL_TIMEOUT_SECONDS", 2)
    source = tmp_path / "slow"
    source.mkdir()
    marker = f"gentity-slow-{os.getpid()}"
    (source / "package.json").write_text(
        json.dumps(
            {
                "name": "gentity-slow-agent",
                "version": "1.0.0",
                "scripts": {"postinstall": f"sh -c 'sleep 600 & exec sleep 601' {marker}"},
            }
        )
    )
    out = subprocess.run(
        ["npm", "pack", "--pack-destination", str(tmp_path)],
        cwd=source,
        capture_output=True,
        text=True,
        check=True,
    )
    step = InstallStep(npm=str(tmp_path / out.stdout.strip().splitlines()[-1]))
    agents = tmp_path / "agents"
    with LogWriter(tmp_path / "instance.log") as log, pytest.raises(AgentInstallError) as raised:
        await ensure_installed(agents, "slow", step, log, _sandbox(tmp_path))
    assert str(raised.value).startswith("install failed: not done after")
    assert not [p for p in Path("/proc").glob("[0-9]*/cmdline") if _runs(p, "sleep\0" + "60")]
    assert sorted(p.name for p in agents.iterdir()) == ["slow.lock"]  # no half install


def _runs(cmdline: Path, text: str) -> bool:
    try:
        return text in cmdline.read_text()
    except OSError:
        return False


async def test_without_an_own_uid_the_install_is_sandboxed_as_the_servers(
    tmp_path: Path, offline: None
) -> None:
    """A server that is not root: one bubblewrap, its own uid mapped inside, the same hiding."""
    tarball = _pack(tmp_path)
    agents, log_file = tmp_path / "agents", tmp_path / "instance.log"
    step = InstallStep(npm=str(tarball))
    with LogWriter(log_file) as log:
        await ensure_installed(agents, "probe", step, log, InstallSandbox(tmp_path))
    cache = bin_dir(agents, "probe", step).parent
    assert (cache / "lib" / "node_modules" / "gentity-probe-agent" / "postinstall-ran").exists()
    assert all(p.lstat().st_mode & 0o222 == 0 for p in cache.rglob("*") if not p.is_symlink())


def _wheel(directory: Path) -> None:
    """A pure-Python wheel with a console script, made by hand (no build backend offline)."""
    info = "gentity_probe_py-1.0.dist-info"
    files = {
        "gentity_probe_py/__init__.py": "def main():\n    print('probe py ran')\n",
        f"{info}/METADATA": "Metadata-Version: 2.1\nName: gentity-probe-py\nVersion: 1.0\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
        "Tag: py3-none-any\n",
        f"{info}/entry_points.txt": "[console_scripts]\nprobe-py = gentity_probe_py:main\n",
    }
    record = "".join(f"{name},,\n" for name in files) + f"{info}/RECORD,,\n"
    with zipfile.ZipFile(directory / "gentity_probe_py-1.0-py3-none-any.whl", "w") as wheel:
        for name, text in {**files, f"{info}/RECORD": record}.items():
            wheel.writestr(name, text)


async def test_a_pypi_install_works_from_its_final_place(
    tmp_path: Path, offline: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The virtualenv is made at the cache's path inside the sandbox, then moved there: its
    scripts name the right interpreter. The wheels' directory (the operator's PIP_FIND_LINKS,
    under the hidden /tmp here) is shown to the sandbox."""
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    _wheel(wheels)
    monkeypatch.setenv("PIP_FIND_LINKS", str(wheels))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    agents, log_file = tmp_path / "agents", tmp_path / "instance.log"
    step = InstallStep(pypi="gentity-probe-py", version="1.0")
    with LogWriter(log_file) as log:
        await ensure_installed(agents, "probe", step, log, _sandbox(tmp_path))
    script = bin_dir(agents, "probe", step) / "probe-py"
    assert script.read_text().splitlines()[0] == f"#!{bin_dir(agents, 'probe', step)}/python"
    ran = subprocess.run([str(script)], capture_output=True, text=True, check=True, env={})
    assert ran.stdout == "probe py ran\n"
    assert script.stat().st_uid == 0 and script.stat().st_mode & 0o222 == 0


async def test_concurrent_first_starts_wait_for_one_sandboxed_install(
    tmp_path: Path, offline: None
) -> None:
    tarball = _pack(tmp_path)
    agents = tmp_path / "agents"
    step = InstallStep(npm=str(tarball))
    logs = [tmp_path / "one.log", tmp_path / "two.log"]

    async def start(log_file: Path) -> None:
        with LogWriter(log_file) as log:
            await ensure_installed(agents, "probe", step, log, _sandbox(tmp_path))

    async with anyio.create_task_group() as group:
        for log_file in logs:
            group.start_soon(start, log_file)
    messages = [[m for _, m in _records(log_file)] for log_file in logs]
    ran = [m for m in messages if any(x.startswith("install: running npm") for x in m)]
    waited = [m for m in messages if "install: already installed" in m]
    assert len(ran) == len(waited) == 1
    assert "install: waiting for another install to finish" in waited[0]
    assert sorted(p.name for p in agents.iterdir()) == ["probe", "probe.lock"]


async def test_without_bubblewrap_the_install_runs_on_the_host_and_says_so(
    tmp_path: Path, offline: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("gentity.providers.compute.local.install.bwrap_path", lambda: None)
    tarball = _pack(tmp_path)
    agents, log_file = tmp_path / "agents", tmp_path / "instance.log"
    step = InstallStep(npm=str(tarball))
    with LogWriter(log_file) as log:
        await ensure_installed(agents, "probe", step, log, _sandbox(tmp_path))
    records = _records(log_file)
    assert records[0] == ("warning", "install: bubblewrap is missing: installing WITHOUT a sandbox")
    assert records[-1] == ("info", "install: done")
    assert (bin_dir(agents, "probe", step) / "probe-agent").exists()
