"""Files of a real instance through the API: round trips, listing, delete, confinement, limits,
and a 100 MB file that the server streams instead of holding."""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from gentity.settings import Settings
from tests.conftest import LiveServer
from tests.server.test_instances import create_shell
from tests.server.test_logs import type_into

ALL_BYTES = bytes(range(256)) * 4


def files(iid: str) -> str:
    return f"/api/instances/{iid}/files"


def refused(response: httpx.Response, status: int, words: str) -> None:
    assert response.status_code == status, response.text
    assert set(response.json()) == {"error"}
    assert words in response.json()["error"], response.text


def test_binary_round_trip_listing_and_delete(bearer: httpx.Client) -> None:
    iid = create_shell(bearer)["id"]
    put = bearer.put(files(iid), params={"path": "sub/dir/bytes.bin"}, content=ALL_BYTES)
    assert put.status_code == 201, put.text
    assert put.json() == {"path": "/home/agent/work/sub/dir/bytes.bin", "size": len(ALL_BYTES)}
    again = bearer.put(files(iid), params={"path": "sub/dir/bytes.bin"}, content=ALL_BYTES[::-1])
    assert again.status_code == 200, again.text

    got = bearer.get(files(iid), params={"path": "sub/dir/bytes.bin"})
    assert got.status_code == 200
    assert got.content == ALL_BYTES[::-1]
    assert got.headers["content-type"] == "application/octet-stream"
    assert got.headers["content-length"] == str(len(ALL_BYTES))
    assert "bytes.bin" in got.headers["content-disposition"]
    absolute = bearer.get(files(iid), params={"path": "/home/agent/work/sub/dir/bytes.bin"})
    assert absolute.content == ALL_BYTES[::-1]
    empty = bearer.put(files(iid), params={"path": "empty"}, content=b"")
    assert empty.status_code == 201
    assert bearer.get(files(iid), params={"path": "empty"}).content == b""

    listing = bearer.get(files(iid), params={"path": "sub/dir"}).json()
    assert listing["truncated"] is False
    [entry] = listing["entries"]
    assert entry["name"] == "bytes.bin" and entry["type"] == "file"
    assert entry["size"] == len(ALL_BYTES) and entry["modifiedAt"].endswith("Z")
    workdir = bearer.get(files(iid)).json()["entries"]
    kinds = {e["name"]: e["type"] for e in workdir}
    assert kinds["sub"] == "directory" and kinds["empty"] == "file"

    refused(bearer.delete(files(iid), params={"path": "sub"}), 409, "not empty")
    assert bearer.delete(files(iid), params={"path": "sub/dir/bytes.bin"}).json() == {"ok": True}
    refused(bearer.get(files(iid), params={"path": "sub/dir/bytes.bin"}), 404, "no such file")
    refused(bearer.delete(files(iid), params={"path": "sub/dir/bytes.bin"}), 404, "no such")
    assert bearer.delete(files(iid), params={"path": "sub", "recursive": "1"}).status_code == 200
    assert "sub" not in {e["name"] for e in bearer.get(files(iid)).json()["entries"]}
    refused(bearer.put(files(iid), params={"path": "."}, content=b"x"), 409, "is a directory")
    bearer.delete(f"/api/instances/{iid}")


def test_escapes_are_refused(bearer: httpx.Client, token: str, settings: Settings) -> None:
    iid = create_shell(bearer)["id"]
    data = settings.data_dir
    type_into(
        str(bearer.base_url),
        iid,
        token,
        f"ln -s /etc etc-link; ln -s {data} data-link; ln -s {data}/instances/{iid} mine;"
        " ln -s ../../.. up; ln -s /run/gentity/logs guest-logs; mkdir -p d;"
        " ln -s /etc/passwd d/passwd; ln -s ../etc-link d/parent; echo made-$((40+2))",
        "made-42",
    )
    for path in (
        "../../../etc/passwd",
        "a/../../x",
        "/etc/passwd",
        "/run/gentity/logs/agent.log",
        "/home/agent/../../etc/passwd",
    ):
        refused(bearer.get(files(iid), params={"path": path}), 400, "")
        refused(bearer.put(files(iid), params={"path": path}, content=b"owned"), 400, "")
        refused(bearer.delete(files(iid), params={"path": path}), 400, "")
    for path in (
        "etc-link",
        "etc-link/passwd",
        "data-link",
        "data-link/secret.key",
        "mine/volume.img",
        "up/etc/passwd",
        "guest-logs/agent.log",
        "d/passwd",
        "d/parent/passwd",  # a link to a link to /etc
    ):
        refused(bearer.get(files(iid), params={"path": path}), 400, "leads out")
        refused(bearer.delete(files(iid), params={"path": f"{path}/x"}), 400, "leads out")
    for parent in ("etc-link", "data-link", "d/parent", "up/tmp"):
        refused(
            bearer.put(files(iid), params={"path": f"{parent}/gentity-escape"}, content=b"x"),
            400,
            "leads out",
        )
    assert not Path("/etc/gentity-escape").exists()
    assert not (data / "gentity-escape").exists()
    assert not Path("/tmp/gentity-escape").exists()
    # The links themselves are the instance's: listed as links, deletable as links.
    entries = {e["name"]: e["type"] for e in bearer.get(files(iid)).json()["entries"]}
    assert entries["etc-link"] == entries["data-link"] == "symlink"
    assert bearer.delete(files(iid), params={"path": "etc-link"}).status_code == 200
    assert Path("/etc/passwd").exists()
    bearer.delete(f"/api/instances/{iid}")


def test_other_users_and_stopped_instances(bearer: httpx.Client, other_user: httpx.Client) -> None:
    iid = create_shell(bearer)["id"]
    assert bearer.put(files(iid), params={"path": "f"}, content=b"mine").status_code == 201
    for response in (
        other_user.get(files(iid), params={"path": "f"}),
        other_user.put(files(iid), params={"path": "f"}, content=b"theirs"),
        other_user.delete(files(iid), params={"path": "f"}),
        bearer.get(files("nope"), params={"path": "f"}),
    ):
        refused(response, 404, "Not Found")
    assert bearer.get(files(iid), params={"path": "f"}).content == b"mine"
    bearer.post(f"/api/instances/{iid}/action", json={"action": "stop"})
    for response in (
        bearer.get(files(iid), params={"path": "f"}),
        bearer.put(files(iid), params={"path": "f"}, content=b"x"),
        bearer.delete(files(iid), params={"path": "f"}),
    ):
        refused(response, 409, "start it first")
    bearer.post(f"/api/instances/{iid}/action", json={"action": "start"})
    assert bearer.get(files(iid), params={"path": "f"}).content == b"mine"
    bearer.delete(f"/api/instances/{iid}")


def test_uploads_over_the_limit_are_413_and_change_nothing(
    server_factory: Callable[[Settings], LiveServer],
    settings_factory: Callable[..., Settings],
    token: str,
) -> None:
    # The token's account lives in the same database, which this second server shares.
    server = server_factory(settings_factory(max_upload_bytes=4096))
    with httpx.Client(
        base_url=server.url, timeout=60, headers={"Authorization": f"Bearer {token}"}
    ) as api:
        iid = create_shell(api)["id"]
        assert api.put(files(iid), params={"path": "f"}, content=b"old").status_code == 201
        over = api.put(files(iid), params={"path": "f"}, content=b"y" * 4097)
        refused(over, 413, "4096 bytes")

        def chunked() -> Iterator[bytes]:  # no Content-Length: counted as it streams
            for _ in range(8):
                yield b"z" * 1024

        refused(api.put(files(iid), params={"path": "f"}, content=chunked()), 413, "4096")
        assert api.get(files(iid), params={"path": "f"}).content == b"old"
        assert {e["name"] for e in api.get(files(iid)).json()["entries"]} == {"f"}
        at_limit = api.put(files(iid), params={"path": "f"}, content=b"y" * 4096)
        assert at_limit.status_code == 200
        # Other bodies keep the general limit.
        refused(api.post("/api/tokens", content=b"{" + b" " * 2_000_000), 413, "too large")
        api.delete(f"/api/instances/{iid}")


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRss:
    """The highest resident size of this process (the server runs in it) while active."""

    def __init__(self) -> None:
        self.start = _rss()
        self.peak = self.start
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._done.wait(0.005):
            self.peak = max(self.peak, _rss())

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._done.set()
        self._thread.join()

    @property
    def growth_mb(self) -> float:
        return (self.peak - self.start) / 2**20


@pytest.mark.local_only  # a 100 MB volume write; the fake Fly's path is the same guest code
def test_a_100_mb_file_streams_through_without_being_held(bearer: httpx.Client) -> None:
    iid = create_shell(bearer)["id"]
    block = os.urandom(1024 * 1024)
    blocks = 100

    def body() -> Iterator[bytes]:
        for i in range(blocks):
            yield i.to_bytes(4, "big") + block[4:]

    sent = hashlib.sha256()
    for chunk in body():
        sent.update(chunk)
    with PeakRss() as upload:
        put = bearer.put(files(iid), params={"path": "big.bin"}, content=body(), timeout=300)
    assert put.status_code == 201, put.text
    assert put.json()["size"] == blocks * len(block)

    received = hashlib.sha256()
    with (
        PeakRss() as download,
        bearer.stream("GET", files(iid), params={"path": "big.bin"}, timeout=300) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-length"] == str(blocks * len(block))
        for chunk in response.iter_bytes():
            received.update(chunk)
    assert received.hexdigest() == sent.hexdigest()
    # Whole, it would be 100 MB (twice that in a list of chunks); streamed, a few frames.
    assert upload.growth_mb < 40, upload.growth_mb
    assert download.growth_mb < 40, download.growth_mb
    bearer.delete(f"/api/instances/{iid}")


def test_the_openapi_document_lists_the_file_routes(client: httpx.Client) -> None:
    spec = client.get("/api/openapi.json").json()
    operations = spec["paths"]["/api/instances/{instance_id}/files"]
    assert set(operations) == {"get", "put", "delete"}
    got = operations["get"]["responses"]["200"]["content"]
    assert {"application/json", "application/octet-stream"} <= set(got)
    put = operations["put"]
    assert "application/octet-stream" in put["requestBody"]["content"]
    assert {"200", "201", "400", "401", "403", "404", "409", "413", "502"} <= set(put["responses"])
    for operation in operations.values():
        names = {parameter["name"] for parameter in operation["parameters"]}
        assert "path" in names
        assert "409" in operation["responses"]


@pytest.mark.local_only  # looks at the volume on this host
def test_written_files_belong_to_the_instance_user(
    bearer: httpx.Client, settings: Settings
) -> None:
    iid = create_shell(bearer)["id"]
    assert bearer.put(files(iid), params={"path": "new/dir/f"}, content=b"x").status_code == 201
    work = settings.data_dir / "instances" / iid / "disk" / "home" / "work"
    owner = work.stat().st_uid
    if os.geteuid() == 0:
        assert owner != 0  # the instance's own host uid
    expected = {"new": 0o755, "new/dir": 0o755, "new/dir/f": 0o644}
    for name, mode in expected.items():
        path = work / name
        st = path.stat()
        assert (st.st_uid, st.st_mode & 0o7777) == (owner, mode), name
    bearer.delete(f"/api/instances/{iid}")
