"""Issue 15, section 2: SearchBuildLogs on a build of 1,000,000 lines.

A rare string (one line), a rare regular expression (100 lines) and a
common string (every line: counted the way the log page counts, omit_lines,
max_matches=100,000 per call and the cursor to continue), searched over gRPC
while the build is hot, then again once it is archived (the archive written
the way the archiver writes it, 1 MiB chunks); beside, in the same run, the
same rows counted by PostgreSQL (`count(*) ... WHERE message LIKE` / `~`)
and the same message bytes scanned in one process (`in` and RE2 over a list
of bytes already in memory: the floor of any scan).

    make bench BENCH_ARGS="--only search"
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from typing import Any

import psycopg
import re2
from buildplatform.v1 import build_log_pb2 as L
from buildplatform.v1 import build_log_pb2_grpc

from bench import procs
from bench.feeds import load_lines
from bench.streams import Figures, new_builds
from server.archive.chunks import CHUNK_BYTES
from tests.archive_support import archive_build
from tests.support import open_channel

LINES = 1_000_000
# The messages are 'line <seq> [compile] src/components/TodoList.tsx: 14 modules' (bench.feeds.load_lines).
CASES: list[tuple[str, dict[str, Any], str, str]] = [
    # (name, request, PostgreSQL predicate, in-process test)
    ("rare string (1 line)", {"query": "line 500000 ["}, "message LIKE '%%line 500000 [%%'", "literal"),
    ("rare regular expression (100 lines)", {"query": r"line 5000\d\d \[", "regex": True},
     r"message ~ 'line 5000[0-9][0-9] \['", "regex"),
    ("common string (every line), counted", {"query": "TodoList", "omit_lines": True, "max_matches": 100_000},
     "message LIKE '%%TodoList%%'", "literal"),
]
EXPECTED = [1, 100, LINES]


def _search(stub: Any, build_id: str, request: dict[str, Any]) -> tuple[int, int]:
    """(matches, calls): the whole log, resuming from each call's last cursor."""
    matches, calls, cursor = 0, 0, 0
    while True:
        last = None
        for last in stub.SearchBuildLogs(
            L.SearchBuildLogsRequest(build_id=build_id, after_sequence=cursor, **request), timeout=300
        ):
            matches += sum(1 for hit in last.hits if not hit.context)
        calls += 1
        assert last is not None
        if last.done:
            return matches, calls
        cursor = last.cursor


def _timed(call: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    got = call()
    return time.perf_counter() - started, got


def search(url: str, figures: Figures, *, lines: int = LINES) -> None:
    (build_id,) = new_builds(url, 1)
    print(f"  loading {lines:,} lines ...", flush=True)
    load_lines(url, build_id, lines)
    with psycopg.connect(url) as conn:
        messages = [row[0].encode() for row in conn.execute(
            "SELECT message FROM build_logs WHERE build_id = %s ORDER BY seq", (build_id,))]
    archive_dir = tempfile.mkdtemp(prefix="bench-search-archive-")
    measured: dict[str, dict[str, float]] = {}
    server = procs.server("server-search", url, ARCHIVE_URL=archive_dir, ARCHIVE="false")
    try:
        with open_channel(server.address, token=server.token) as channel:
            stub = build_log_pb2_grpc.BuildLogServiceStub(channel)
            for tier in ("hot", "archived"):
                if tier == "archived":
                    seconds, archived = _timed(lambda: archive_build(url, archive_dir, build_id, chunk_bytes=CHUNK_BYTES,
                                                                       drop_hot=False))
                    print(f"  archived in {seconds:.1f} s: {archived.chunks} chunks", flush=True)
                for (name, request, _, _), expected in zip(CASES, EXPECTED, strict=True):
                    seconds, (found, calls) = _timed(lambda request=request: _search(stub, build_id, request))
                    if found != expected:
                        figures.errors.append(f"search: {name}, {tier}: {found} matches, expected {expected}")
                    measured.setdefault(name, {})[tier] = seconds
                    print(f"  {tier:<9} {name:<40} {seconds:7.2f} s ({found:,} matches, {calls} calls)", flush=True)
    finally:
        server.stop()
    with psycopg.connect(url) as conn:
        for name, _, predicate, _ in CASES:
            sql = f"SELECT count(*) FROM build_logs WHERE build_id = %s AND {predicate}"
            seconds, row = _timed(lambda sql=sql: conn.execute(sql, (build_id,)).fetchone())
            measured[name]["postgres"] = seconds
            print(f"  postgres  {name:<40} {seconds:7.2f} s ({row[0]:,} rows)", flush=True)
    for name, request, _, how in CASES:
        if how == "literal":
            needle = request["query"].encode()
            seconds, count = _timed(lambda needle=needle: sum(1 for m in messages if needle in m))
        else:
            pattern = re2.compile(request["query"].encode())
            seconds, count = _timed(lambda pattern=pattern: sum(1 for m in messages if pattern.search(m)))
        measured[name]["process"] = seconds
        print(f"  process   {name:<40} {seconds:7.2f} s ({count:,} lines)", flush=True)
    figures.values["search"] = measured
    for name, _, _, _ in CASES:
        m = measured[name]
        figures.rows.append((
            f"SearchBuildLogs, {name}, build of {lines:,} lines: hot / archived",
            f"{m['hot']:.2f} s / {m['archived']:.2f} s",
            f"PostgreSQL count(*) of the same rows {m['postgres']:.2f} s; the bytes in one process {m['process']:.2f} s",
            f"{m['hot'] / m['postgres']:.1f}x / {m['archived'] / m['postgres']:.1f}x PostgreSQL's time",
        ))
