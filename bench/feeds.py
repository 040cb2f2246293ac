"""Issue 7, sections 1 and 2, each figure beside its bound or its "before":

- filters: a build of 1,000,000 log lines; ms per call of the filtered reads
  (tail of 10 ERROR lines, since_time in the middle, List with a level
  filter, a stream catching up from 0 with a rare level), the query plans
  (EXPLAIN ANALYZE, BUFFERS), and the statements of 6673656 (before the
  filter indexes) on the same rows, run with the new index dropped inside a
  transaction that is rolled back;
- rings: server RSS while builds of maximum-size lines are followed, and with
  followers that never read, beside FEED_RING_BYTES, FEED_TOTAL_BYTES and the
  per-stream cost.
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from buildplatform.v1 import build_log_pb2 as L
from buildplatform.v1 import build_log_pb2_grpc
from google.protobuf import struct_pb2, timestamp_pb2

from bench import procs
from bench.env import ROOT
from bench.streams import Figures, Followers, cancel, check_delivery, new_builds
from server.domain.limits import RESPONSE_BYTES
from server.live.feed import READ_BYTES
from server.store import feeds
from tests.support import open_channel

LINES = 1_000_000
ERROR_EVERY, WARN_EVERY = 10_007, 20  # 99 ERROR lines (rare), 5% WARN
BASE_TIME = datetime(2026, 1, 1, tzinfo=UTC)


def _level(seq: str) -> str:
    return f"CASE WHEN {seq} %% {ERROR_EVERY} = 0 THEN 'error' WHEN {seq} %% {WARN_EVERY} = 0 THEN 'warn' ELSE 'info' END"


def load_lines(url: str, build_id: str, count: int) -> float:
    """`count` lines of about 100 bytes, one per millisecond, written in SQL."""
    started = time.perf_counter()
    with psycopg.connect(url) as conn:
        conn.execute(
            "INSERT INTO build_logs (build_id, seq, level, message, metadata, create_time, wire_bytes) "
            f"SELECT %(id)s, g, {_level('g')}, 'line ' || g || ' [compile] src/components/TodoList.tsx: 14 modules', "
            f"NULL, %(base)s::timestamptz + g * interval '1 millisecond', {feeds.SERVER_FIELDS_BYTES} + 60 "
            "FROM generate_series(1, %(n)s) AS g",
            {"id": build_id, "base": BASE_TIME, "n": count},
        )
        conn.execute(
            "UPDATE builds SET last_log_seq = %(n)s, last_log_time = %(base)s::timestamptz + %(n)s * interval '1 millisecond' "
            "WHERE id = %(id)s",
            {"id": build_id, "base": BASE_TIME, "n": count},
        )
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE build_logs")
    return time.perf_counter() - started


def _timestamp(moment: datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def _ms(call: Callable[[], int], calls: int) -> tuple[float, float, int]:
    """(median ms, max ms, result of the last call) over `calls` calls after one warm-up."""
    result = call()
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        result = call()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), max(times), result


def _stream_lines(stub: Any, **request: Any) -> int:
    return sum(len(r.logs) for r in stub.StreamBuildLogs(L.StreamBuildLogsRequest(**request), timeout=120))


def _list_lines(stub: Any, **request: Any) -> int:
    return len(stub.ListBuildLogs(L.ListBuildLogsRequest(**request), timeout=120).logs)


# The statements of 6673656 for the same reads, measured with the filter
# index dropped (it did not exist then). Its stream caught up by reading every
# row, 1000 at a time, and filtering in Python: OLD_PAGE, LINES / 1000 times.
OLD_TAIL = (
    "SELECT seq FROM build_logs WHERE build_id = %(id)s AND seq > %(after)s AND seq <= %(upto)s "
    "AND level = ANY(%(values)s) ORDER BY seq DESC OFFSET %(skip)s LIMIT 1"
)
OLD_LIST = (
    "SELECT * FROM build_logs WHERE build_id = %(id)s AND seq > %(after)s AND level = ANY(%(values)s) "
    "ORDER BY seq LIMIT %(limit)s"
)
OLD_SINCE = "SELECT min(seq) FROM build_logs WHERE build_id = %(id)s AND seq > %(after)s AND create_time >= %(since)s"
OLD_PAGE = "SELECT * FROM build_logs WHERE build_id = %(id)s AND seq > %(after)s ORDER BY seq LIMIT 1000"

TAIL_SERVED = "the tail query, then every line after the 10th last ERROR read and converted"
CATCH_UP = "every line read and converted, 1000 per query"

EXECUTION = re.compile(r"Execution Time: ([\d.]+) ms")


def _explain(conn: psycopg.Connection[Any], sql: str, params: dict[str, Any]) -> tuple[float, str]:
    rows = conn.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql, params).fetchall()
    plan = "\n".join(row[0] for row in rows)
    match = EXECUTION.search(plan)
    return (float(match.group(1)) if match else float("nan")), plan


def filters(url: str, figures: Figures, *, lines: int = LINES, calls: int = 20) -> None:
    (build_id,) = new_builds(url, 1)
    print(f"  loading {lines:,} lines ...", flush=True)
    loaded = load_lines(url, build_id, lines)
    errors = [s for s in range(1, lines + 1) if s % ERROR_EVERY == 0]
    middle = lines // 2
    since = BASE_TIME + timedelta(milliseconds=middle)
    server = procs.server("server-filters", url)
    try:
        with open_channel(server.address, token=server.token) as channel:
            stub = build_log_pb2_grpc.BuildLogServiceStub(channel)
            ERROR, WARN = L.LOG_LEVEL_ERROR, L.LOG_LEVEL_WARN
            cases: list[tuple[str, Callable[[], int], int]] = [
                ("StreamBuildLogs tail_lines=10 levels=[ERROR]",
                 lambda: _stream_lines(stub, build_id=build_id, tail_lines=10, levels=[ERROR]), 10),
                ("StreamBuildLogs since_time=middle tail_lines=10",
                 lambda: _stream_lines(stub, build_id=build_id, since_time=_timestamp(since), tail_lines=10), 10),
                ("StreamBuildLogs since_time=middle levels=[ERROR] (catch-up of 500,000 lines)",
                 lambda: _stream_lines(stub, build_id=build_id, since_time=_timestamp(since), levels=[ERROR]),
                 sum(1 for s in errors if s >= middle)),
                ("ListBuildLogs levels=[ERROR] page_size=100",
                 lambda: _list_lines(stub, build_id=build_id, levels=[ERROR], page_size=100), len(errors)),
                ("ListBuildLogs levels=[WARN] page_size=500 after_sequence=middle",
                 lambda: _list_lines(stub, build_id=build_id, levels=[WARN], page_size=500, after_sequence=middle), 500),
                ("ListBuildLogs page_size=500 after_sequence=middle (no filter, for reference)",
                 lambda: _list_lines(stub, build_id=build_id, page_size=500, after_sequence=middle), 500),
                ("StreamBuildLogs levels=[ERROR] from 0 (catch-up of 1,000,000 lines)",
                 lambda: _stream_lines(stub, build_id=build_id, levels=[ERROR]), len(errors)),
            ]
            measured = []
            for name, call, expected in cases:
                median, worst, got = _ms(call, calls)
                if got != expected:
                    figures.errors.append(f"filters: {name} returned {got} lines, expected {expected}")
                measured.append((name, median, worst))
                print(f"  {name:<80} {median:8.1f} ms median, {worst:8.1f} max ({calls} calls, {got} lines)", flush=True)
        before, plans = _plans(url, build_id, lines, middle, since)
    finally:
        server.stop()
    figures.values.update({"filters.lines": lines, "filters.load_s": loaded, "filters.calls": measured,
                           "filters.before": before})
    # The "before" each call is set beside: the same read as 6673656 did it.
    beside = {0: TAIL_SERVED, 1: "since_time in the middle (its SQL)", 3: "List page of ERROR lines (its SQL)",
              6: CATCH_UP}
    for index, (name, median, worst) in enumerate(measured):
        old_ms = before.get(beside.get(index, ""))
        figures.rows.append((f"{name}, build of {lines:,} lines", f"{median:.1f} ms median ({worst:.1f} max)",
                             f"before (6673656), {beside[index]}: {old_ms:,.1f} ms" if old_ms else "",
                             f"{old_ms / median:,.0f}x faster" if old_ms else ""))
    figures.sections.append("### Filtered reads on a build of 1,000,000 lines: query plans\n\n" + "\n\n".join(
        f"{title}\n\n```\n{plan}\n```" for title, plan in plans))


def _plans(url: str, build_id: str, lines: int, middle: int, since: datetime) -> tuple[dict[str, float], list[tuple[str, str]]]:
    kind = feeds.LOGS
    after = [
        ("tail of 10 ERROR lines (tail_statement)",
         feeds.tail_statement(kind, build_id, after=0, upto=lines, tail=10, values=["error"])),
        ("since_time in the middle (since_statement)",
         feeds.since_statement(kind, build_id, after=0, upto=lines, since=since)),
        ("a catch-up read of ERROR lines from 0 (Read.statement, stream page)",
         feeds.Read(kind, build_id, 0, limit=1000, max_bytes=RESPONSE_BYTES, upto=lines, values=["error"]).statement()),
        ("a List page of WARN lines from the middle (Read.statement, page_size=500)",
         feeds.Read(kind, build_id, middle, limit=500, max_bytes=RESPONSE_BYTES, values=["warn"]).statement()),
    ]
    plans = []
    with psycopg.connect(url, autocommit=True) as conn:
        for title, (sql, params) in after:
            ms, plan = _explain(conn, sql, params)
            print(f"  plan: {title}: {ms:.2f} ms in PostgreSQL", flush=True)
            plans.append((f"Now, {title}: {ms:.2f} ms", plan))
    before: dict[str, float] = {}
    with psycopg.connect(url) as conn:
        conn.execute("DROP INDEX ix_build_logs_build_id_level_seq")  # rolled back below
        old = [
            ("tail of 10 ERROR lines (its SQL)", OLD_TAIL, {"id": build_id, "after": 0, "upto": lines, "values": ["error"], "skip": 9}),
            ("since_time in the middle (its SQL)", OLD_SINCE, {"id": build_id, "after": 0, "since": since}),
            ("List page of ERROR lines (its SQL)", OLD_LIST, {"id": build_id, "after": 0, "values": ["error"], "limit": 101}),
        ]
        for title, sql, params in old:
            ms, plan = _explain(conn, sql, params)
            before[title] = ms
            print(f"  before: {title}: {ms:.1f} ms in PostgreSQL", flush=True)
            plans.append((f"Before (6673656), {title}: {ms:.1f} ms", plan))
        tail_from = conn.execute(OLD_TAIL, old[0][2]).fetchone()[0] - 1  # type: ignore[index]
        before[TAIL_SERVED] = before["tail of 10 ERROR lines (its SQL)"] + _old_catch_up(conn, build_id, tail_from)
        print(f"  before: the tail's stream then read and converted {lines - tail_from:,} lines", flush=True)
        before[CATCH_UP] = _old_catch_up(conn, build_id, 0)
        for title in (TAIL_SERVED, CATCH_UP):
            print(f"  before: {title}: {before[title]:,.1f} ms", flush=True)
        conn.rollback()
    for title, plan in plans:
        print(f"\n  {title}\n" + "\n".join(f"    {line}" for line in plan.splitlines()), flush=True)
    return before, plans


def _old_catch_up(conn: psycopg.Connection[Any], build_id: str, after: int) -> float:
    """ms for 6673656's stream to pass every line after `after`: pages of 1000
    rows, each converted to its serialized message, filtered in Python."""
    from psycopg.rows import dict_row

    from server.live.records import log_entry

    started = time.perf_counter()
    cursor = after
    with conn.cursor(row_factory=dict_row) as cur:
        while True:
            page = cur.execute(OLD_PAGE, {"id": build_id, "after": cursor}).fetchall()
            if not page:
                break
            entries = [log_entry(row) for row in page]
            cursor = entries[-1].seq
    return (time.perf_counter() - started) * 1000


# -- rings ---------------------------------------------------------------------------

MAX_LINE_FILLER = "x" * 65_400
PER_STREAM_MB = 4  # 4 messages of RESPONSE_BYTES: what gRPC was seen to hold per stalled stream


def max_lines(first_seq: int, count: int) -> list[L.LogEntry]:
    """Lines at the field maximum (a 64 KiB message, 16 KiB of metadata), in
    bench.followers' format: `<send time ns> <seq> ...`."""
    sent = time.time_ns()
    metadata = struct_pb2.Struct()
    metadata.update({"blob": "m" * 16_000})
    return [
        L.LogEntry(level=L.LOG_LEVEL_INFO, message=f"{sent} {first_seq + i} {MAX_LINE_FILLER}"[:65_536], metadata=metadata)
        for i in range(count)
    ]


def _append_max(server: procs.Proc, builds: list[str], lines: int, batch: int) -> None:
    with open_channel(server.address, token=server.token, options=[("grpc.max_send_message_length", 64 << 20)]) as channel:
        stub = build_log_pb2_grpc.BuildLogServiceStub(channel)
        for first in range(1, lines + 1, batch):
            for build_id in builds:  # interleaved: every ring grows at once
                stub.AppendBuildLogs(L.AppendBuildLogsRequest(build_id=build_id, entries=max_lines(first, batch),
                                                              first_sequence=first), timeout=60)


class Peak:
    """The highest RSS of a process, sampled every 0.1 s in a thread."""

    def __init__(self, proc: procs.Proc) -> None:
        self.proc, self.mb, self._stop = proc, proc.rss_mb(), threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.1):
            self.mb = max(self.mb, self.proc.rss_mb())

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return max(self.mb, self.proc.rss_mb())


NEVER_READ = """
import asyncio, os, sys
from buildplatform.v1 import build_log_pb2 as L, build_log_pb2_grpc
from tests.support import open_aio_channel

async def main(address, build_id, count):
    calls = []
    for _ in range(count):  # each on its own connection, as separate clients
        channel = open_aio_channel(address, token=os.environ.get("BUILDPLATFORM_TOKEN"),
                                   options=[("grpc.use_local_subchannel_pool", 1)])
        call = build_log_pb2_grpc.BuildLogServiceStub(channel).StreamBuildLogs(
            L.StreamBuildLogsRequest(build_id=build_id, follow=True))
        await call.read()  # the caught-up marker; then never read again
        calls.append(call)
    print("ready", flush=True)
    await asyncio.sleep(3600)

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
"""


def rings(url: str, figures: Figures, *, builds: int = 16, lines: int = 200, batch: int = 25,
          ring_bytes: int = 8 << 20, total_bytes: int = 64 << 20, stalled: int = 20) -> None:
    """(1) `builds` builds followed by one reading follower each receive
    `lines` maximum-size lines (16 MB per build): peak RSS beside
    FEED_TOTAL_BYTES; (2) `stalled` followers that never read one build
    receiving the same: peak RSS beside FEED_RING_BYTES + the per-stream cost."""
    env = {"FEED_RING_BYTES": str(ring_bytes), "FEED_TOTAL_BYTES": str(total_bytes), "LOG_LEVEL": "WARNING"}
    line_mb = len(max_lines(1, 1)[0].SerializeToString()) / 1e6
    server = procs.server("server-rings", url, **env)
    group = None
    try:
        ids = new_builds(url, builds)
        time.sleep(1)
        idle = server.rss_mb()
        group = Followers("followers-rings", server, ids, builds, batch)
        group.wait_ready()
        peak = Peak(server)
        _append_max(server, ids, lines, batch)
        if not group.wait_min(lines, timeout=120):
            figures.errors.append(f"rings: followers did not receive all {lines} lines")
        followed = peak.stop()
        for build_id in ids:
            cancel(server, build_id)
        check_delivery(figures, "rings (followed builds of maximum-size lines)", group.finish(), lines)
    finally:
        if group is not None and group.proc.proc.poll() is None:
            group.proc.stop()
        server.stop()
    print(f"  {builds} followed builds x {lines} lines of {line_mb * 1000:.0f} kB ({builds * lines * line_mb:.0f} MB written): "
          f"server RSS {idle:.0f} MB idle, {followed:.0f} MB peak (+{followed - idle:.0f} MB); "
          f"FEED_TOTAL_BYTES {total_bytes / 1e6:.0f} MB, FEED_RING_BYTES {ring_bytes / 1e6:.0f} MB", flush=True)

    server = procs.server("server-stalled", url, **env)
    client = None
    try:
        (build_id,) = new_builds(url, 1)
        time.sleep(1)
        idle2 = server.rss_mb()
        client = subprocess.Popen([sys.executable, "-c", NEVER_READ, server.address, build_id, str(stalled)],
                                  cwd=ROOT, env={**os.environ, **server.client_env()},
                                  stdout=subprocess.PIPE, text=True)
        assert client.stdout is not None
        if client.stdout.readline().strip() != "ready":
            raise RuntimeError("the never-reading followers did not start")
        peak = Peak(server)
        _append_max(server, [build_id], lines, batch)
        time.sleep(2)  # let every stalled stream fill what flow control lets it
        stalled_peak = peak.stop()
        cancel(server, build_id)
    finally:
        if client is not None:
            client.kill()
            client.wait()
        server.stop()
    floor = bare_stall(stalled)
    per_stream = (stalled_peak - idle2 - ring_bytes / 1e6) / stalled
    # The documented model: the rings, one feed read in flight per feed (its
    # rows and their messages), and per stream what flow control lets gRPC
    # hold (a few messages of at most RESPONSE_BYTES; docs/streaming.md).
    read_mb = 2 * READ_BYTES / 1e6
    bound = total_bytes / 1e6 + builds * read_mb + builds * PER_STREAM_MB
    stalled_bound = ring_bytes / 1e6 + read_mb + stalled * PER_STREAM_MB
    print(f"  {stalled} followers that never read, 1 build x {lines} lines ({lines * line_mb:.0f} MB written): "
          f"server RSS {idle2:.0f} MB idle, {stalled_peak:.0f} MB peak (+{stalled_peak - idle2:.0f} MB); "
          f"beyond one ring: {per_stream:.1f} MB per stalled stream (a message is at most {RESPONSE_BYTES / 1e6:.1f} MB)",
          flush=True)
    figures.values.update({"rings.idle": idle, "rings.peak": followed, "rings.stalled.idle": idle2,
                           "rings.stalled.peak": stalled_peak, "rings.per_stream": per_stream, "rings.floor": floor})
    figures.rows.append((f"Server RSS, {builds} followed builds receiving {lines} maximum-size lines each "
                         f"({builds * lines * line_mb:.0f} MB)",
                         f"{followed:.0f} MB peak (idle {idle:.0f} MB, +{followed - idle:.0f} MB)",
                         f"bound +{bound:.0f} MB: FEED_TOTAL_BYTES {total_bytes / 1e6:.0f} MB, a read in flight per "
                         f"feed, {PER_STREAM_MB} MB per stream (rows alone would have kept {builds * lines * line_mb:.0f} MB)",
                         _verdict(followed - idle <= bound)))
    figures.rows.append((f"Server RSS, {stalled} followers that never read, {lines} maximum-size lines",
                         f"{stalled_peak:.0f} MB peak (idle {idle2:.0f} MB, +{stalled_peak - idle2:.0f} MB)",
                         f"bound +{stalled_bound:.0f} MB: FEED_RING_BYTES {ring_bytes / 1e6:.0f} MB, "
                         f"{PER_STREAM_MB} MB per stream; bare grpc.aio, {stalled} stalled streams of "
                         f"{RESPONSE_BYTES / 1e6:.1f} MB messages: +{floor['mb']:.0f} MB, "
                         f"{floor['per_stream']:.0f} yields per stream, then none",
                         f"{per_stream:.1f} MB per stalled stream; {_verdict(stalled_peak - idle2 <= stalled_bound)}"))


def _verdict(ok: bool) -> str:
    return "**within**" if ok else "**NOT within**"


def bare_stall(count: int, seconds: float = 3.0) -> dict[str, float]:
    """The floor: a bare grpc.aio handler yielding RESPONSE_BYTES messages to
    `count` clients that never read (bench.stall). Its yields must stop (flow
    control holds the handler): the last two counts must be equal."""
    server = procs.Proc("stall-server", ["-m", "bench.stall", "serve", str(RESPONSE_BYTES)], {})
    client = None
    assert server.proc.stdout is not None
    try:
        server.port = int(server.proc.stdout.readline())
        time.sleep(0.5)
        idle = server.rss_mb()
        client = procs.Proc("stall-clients", ["-m", "bench.stall", "clients", server.address, str(count)], {})
        assert client.proc.stdout is not None
        if client.proc.stdout.readline().strip() != "ready":
            raise RuntimeError("bench.stall clients did not start")
        counts = []
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            counts.append(int(server.proc.stdout.readline()))
        rss = server.rss_mb()
    finally:
        if client is not None:
            client.stop()
        server.stop()
    stopped = len(counts) >= 2 and counts[-1] == counts[-2]
    print(f"  floor, bare grpc.aio: {count} streams that never read, {RESPONSE_BYTES / 1e6:.1f} MB messages: "
          f"handler resumed {counts[-1] / count:.0f} times per stream, then {'never again' if stopped else 'STILL RESUMED'}; "
          f"server RSS +{rss - idle:.0f} MB ({(rss - idle) / count:.1f} MB per stream)", flush=True)
    if not stopped:
        raise RuntimeError(f"bare grpc.aio kept resuming stalled streams: yields {counts}")
    return {"mb": rss - idle, "per_stream": counts[-1] / count}
