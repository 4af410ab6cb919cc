"""Floors: the least work a goal's figure must contain, measured in the same run.

A figure that misses its goal says how far it is from the goal; a floor says how far any
implementation in this process model could get. Each measures one unavoidable part of the
work with nothing of Gentity's around it (the bare database driver, zlib alone, the host's
CPU counters), so that a goal whose floor already takes the whole allowance is seen to be out
of reach on this host rather than merely not reached yet.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import datetime
from operator import itemgetter
from typing import Any

import psycopg
from sqlalchemy.dialects import sqlite
from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg

from bench.stats import median
from gentity import models
from gentity.server.services.instances import LIST, Listed
from gentity.server.websocket_protocol import COMPRESSION_LEVEL

# The list entry's fields (wire name by Python name), in the wire model's order: those the
# row holds are taken from it, the rest (the agent's health, autoStopAt) are null, as they are
# for a stopped instance.
_WIRE_FIELDS = {name: field.alias or name for name, field in models.Instance.model_fields.items()}


def encode_list(rows: list[tuple[Any, ...]]) -> bytes:
    """The rows as the list's JSON, with no validation or model in between."""
    held = [name for name in _WIRE_FIELDS if name in Listed._fields]
    pick = itemgetter(*(Listed._fields.index(name) for name in held))
    keys = [_WIRE_FIELDS[name] for name in held]
    nulls = dict.fromkeys(_WIRE_FIELDS[name] for name in _WIRE_FIELDS if name not in held)
    entries = [{**dict(zip(keys, pick(row), strict=True)), **nulls} for row in rows]
    return json.dumps({"instances": entries}, separators=(",", ":"), default=_isoformat).encode()


def _isoformat(value: Any) -> str:
    """The one type the JSON encoder is handed that it cannot write (PostgreSQL's)."""
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON")


@dataclass(frozen=True)
class ListFloor:
    read_us: float
    """Running the list's query and fetching its rows with the bare driver."""
    read_and_encode_us: float
    """That, and the rows encoded as the response's JSON (no validation, no model)."""
    rows: int


def list_floor(database_url: str, user_id: str, runs: int = 300) -> ListFloor:
    """Medians over ``runs`` calls in this process, in CPU time, on the server's own database:
    a lower bound on what a ``GET /api/instances`` costs the server's event loop beyond routing
    and authentication. SQLite hands datetimes over as text here, so its floor is a little lower
    than the real work (nothing is parsed)."""
    with list_reader(database_url, user_id) as fetch:
        rows = fetch()
        read = _median_us(fetch, runs)
        read_and_encode = _median_us(lambda: encode_list(fetch()), runs)
    return ListFloor(read, read_and_encode, len(rows))


@contextmanager
def list_reader(database_url: str, user_id: str) -> Iterator[Callable[[], list[tuple[Any, ...]]]]:
    """A call that runs the list's query for ``user_id`` on a bare driver connection of its
    own (closed on leaving) and returns the rows as tuples."""
    statement = LIST.params(user_id=user_id)
    literal = {"literal_binds": True}
    if database_url.startswith("sqlite"):
        path = database_url.split(":///", 1)[1]
        sql = str(statement.compile(dialect=sqlite.dialect(), compile_kwargs=literal))
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as connection:
            yield lambda: connection.execute(sql).fetchall()
        return
    dsn = database_url.replace("postgresql+psycopg://", "postgresql://", 1)
    dialect = PGDialect_psycopg()  # type: ignore[no-untyped-call]
    sql = str(statement.compile(dialect=dialect, compile_kwargs=literal))
    with psycopg.connect(dsn, autocommit=True) as pg:
        yield lambda: pg.execute(sql).fetchall()  # no parameters: the text is sent as it is


def _median_us(call: Callable[[], object], runs: int) -> float:
    # CPU time of this thread: what the server's event loop would spend. A PostgreSQL round
    # trip's wait is left out, as the loop serves other requests meanwhile.
    samples = []
    for _ in range(runs):
        start = time.thread_time()
        call()
        samples.append((time.thread_time() - start) * 1e6)
    return median(samples)


def deflate_rate(data: bytes, message_bytes: int = 16 * 1024) -> float:
    """Bytes/s of CPU time that permessage-deflate at the server's settings compresses,
    ``data`` sent as messages of ``message_bytes`` (one compressor, flushed per message)."""
    compressor = zlib.compressobj(COMPRESSION_LEVEL, zlib.DEFLATED, -15, 5)
    start = time.process_time()
    for offset in range(0, len(data), message_bytes):
        compressor.compress(data[offset : offset + message_bytes])
        compressor.flush(zlib.Z_SYNC_FLUSH)
    return len(data) / max(time.process_time() - start, 1e-9)


@dataclass
class HostCpu:
    """The host's CPU time spent over a ``with`` block (every process, from ``/proc/stat``)."""

    busy_seconds: float = 0.0
    wall_seconds: float = 0.0

    @property
    def cores(self) -> int:
        return os.cpu_count() or 1

    @property
    def utilisation(self) -> float:
        """Busy share of all cores over the block, 0 to 1."""
        return self.busy_seconds / max(self.wall_seconds * self.cores, 1e-9)


@contextmanager
def host_cpu() -> Iterator[HostCpu]:
    measured = HostCpu()
    busy, started = _busy_seconds(), time.perf_counter()
    try:
        yield measured
    finally:
        measured.busy_seconds = _busy_seconds() - busy
        measured.wall_seconds = time.perf_counter() - started


def _busy_seconds() -> float:
    with open("/proc/stat") as f:
        ticks = [int(field) for field in f.readline().split()[1:]]
    idle = ticks[3] + ticks[4]  # idle, iowait
    return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")
