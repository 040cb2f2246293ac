"""Issue 3: ingest, append-to-follower latency, follower memory and
statements per appended batch, each beside its floor or target."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import grpc
import psycopg
from buildplatform.v1 import build_log_pb2, build_log_pb2_grpc, build_pb2, build_pb2_grpc

from bench import cpu, load, procs
from bench.h2 import percentile

FILLER = "[compile] src/components/TodoList.tsx: 14 modules transformed, bundle 182.4 kB (gzip 54.1 kB)"


@dataclass
class Figures:
    values: dict[str, Any] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # Rows of the summary table and markdown sections (plans) that a bench
    # formats itself (bench.feeds), printed by bench.report as they are.
    rows: list[tuple[str, str, str, str]] = field(default_factory=list)
    sections: list[str] = field(default_factory=list)


def new_builds(url: str, count: int) -> list[str]:
    """`count` RUNNING builds of user 1, project 1, with no logs yet."""
    ids = ["c" + os.urandom(12).hex() for _ in range(count)]
    with psycopg.connect(url) as conn:
        conn.cursor().executemany(
            "INSERT INTO builds (id, user_id, project_id, status, app_spec, create_time, update_time, start_time) "
            "VALUES (%s, %s, %s, 'RUNNING', '# bench', now(), now(), now())",
            [(i, load.uid("u", 1), load.uid("p", 1)) for i in ids],
        )
    return ids


def entries(first_seq: int, count: int, stamp: bool = True) -> list[build_log_pb2.LogEntry]:
    sent = time.time_ns() if stamp else 0
    return [
        build_log_pb2.LogEntry(level=build_log_pb2.LOG_LEVEL_INFO, message=f"{sent} {first_seq + i} {FILLER}")
        for i in range(count)
    ]


class Followers:
    """A bench.followers process, its progress read from its stdout."""

    def __init__(self, name: str, address: str, builds: list[str], count: int, batch: int = 50, per_connection: int = 1) -> None:
        self.proc = procs.Proc(
            name, ["-m", "bench.followers", "--address", address, "--builds", ",".join(builds),
                   "--count", str(count), "--batch", str(batch), "--streams-per-connection", str(per_connection)], {},
        )
        self.ready = threading.Event()
        self.minimum = 0
        self.result: dict[str, Any] | None = None
        self.ready_s = 0.0
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.proc.stdout is not None
        for line in self.proc.proc.stdout:
            if line.startswith("ready"):
                self.ready_s = float(line.split()[1])
                self.ready.set()
            elif line.startswith("min "):
                self.minimum = int(line.split()[1])
            elif line.startswith("result "):
                self.result = json.loads(line[len("result "):])

    def wait_ready(self, timeout: float = 120) -> None:
        if not self.ready.wait(timeout):
            raise RuntimeError(f"{self.proc.name}: streams not ready after {timeout}s:\n{self.proc.log_path.read_text()[-2000:]}")

    def wait_min(self, seq: int, timeout: float = 60) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.minimum >= seq:
                return True
            if self.proc.proc.poll() is not None:
                break
            time.sleep(0.02)
        return False

    def finish(self, timeout: float = 60) -> dict[str, Any]:
        """Wait for the streams to end (the build finished), else stop them."""
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.proc.wait(timeout)
        self.proc.stop()
        self._thread.join(10)
        if self.result is None:
            raise RuntimeError(f"{self.proc.name}: no result:\n{self.proc.log_path.read_text()[-2000:]}")
        return self.result


def check_delivery(figures: Figures, what: str, result: dict[str, Any], expected: int) -> None:
    short = sum(1 for n in result["lines"] if n != expected)
    problems = {k: result[k] for k in ("gaps", "duplicates", "mismatches") if result[k]}
    if short or problems:
        figures.errors.append(
            f"{what}: {short} of {result['streams']} streams did not get exactly {expected} lines; {problems}"
        )


def cancel(address: str, build_id: str) -> None:
    with grpc.insecure_channel(address) as channel:
        build_pb2_grpc.BuildServiceStub(channel).CancelBuild(
            build_pb2.CancelBuildRequest(id=build_id, reason="bench done"), timeout=10
        )


# -- ingest ----------------------------------------------------------------------

def copy_floor(url: str, build_id: str, batches: int, size: int, *, after: int = 0, per_batch: bool = True) -> float:
    """Rows/s of raw COPY into build_logs from one connection: one transaction
    (and so one durable commit) per batch, or all batches in one transaction."""
    rows = [(e.message,) for e in entries(1, size, stamp=False)]
    with psycopg.connect(url) as conn:
        started = time.perf_counter()
        seq = after
        outer = contextlib.nullcontext() if per_batch else conn.transaction()
        with outer:
            for _ in range(batches):
                _copy_batch(conn, build_id, rows, seq)
                seq += size
        return batches * size / (time.perf_counter() - started)


def _copy_batch(conn: psycopg.Connection[Any], build_id: str, rows: list[tuple[str]], seq: int) -> None:
    """One COPY in its own transaction (a savepoint when inside an outer one),
    of the columns an append writes."""
    with conn.transaction(), conn.cursor().copy(
        "COPY build_logs (build_id, seq, level, message, metadata, wire_bytes, create_time) FROM STDIN"
    ) as copy:
        now = time.strftime("%Y-%m-%d %H:%M:%S+00", time.gmtime())
        for (message,) in rows:
            seq += 1
            copy.write_row((build_id, seq, "info", message, None, len(message) + 100, now))


async def _append_many(address: str, build_id: str, batches: int, size: int) -> None:
    prebuilt = entries(1, size, stamp=False)
    async with grpc.aio.insecure_channel(address, options=[("grpc.max_send_message_length", 64 << 20)]) as channel:
        stub = build_log_pb2_grpc.BuildLogServiceStub(channel)
        for batch in range(batches):
            await stub.AppendBuildLogs(
                build_log_pb2.AppendBuildLogsRequest(build_id=build_id, entries=prebuilt, first_sequence=batch * size + 1)
            )


def ingest(url: str, figures: Figures, *, batches: int = 60, size: int = 500, appenders: int = 4) -> None:
    server = procs.server("server-ingest", url)
    try:
        builds = new_builds(url, 2 + appenders)
        asyncio.run(_append_many(server.address, builds[0], 4, size))  # warm-up
        copy_floor(url, builds[1], 4, size)
        copy_rate = copy_floor(url, builds[1], batches, size, after=4 * size)
        bulk_rate = copy_floor(url, builds[1], batches, size, after=(4 + batches) * size, per_batch=False)

        started = time.perf_counter()
        asyncio.run(_append_many(server.address, builds[0], batches, size))
        one = batches * size / (time.perf_counter() - started)

        async def many() -> None:
            await asyncio.gather(*(_append_many(server.address, b, batches, size) for b in builds[2:]))

        started = time.perf_counter()
        asyncio.run(many())
        several = appenders * batches * size / (time.perf_counter() - started)
    finally:
        server.stop()
    codes = procs.access_codes(server)
    if set(codes) - {"OK"}:
        figures.errors.append(f"ingest: server answered {codes}")
    figures.values.update(
        {"ingest.copy": copy_rate, "ingest.copy_bulk": bulk_rate, "ingest.one": one, "ingest.several": several, "ingest.appenders": appenders,
         "ingest.batch": size, "ingest.lines": batches * size}
    )
    print(f"  raw COPY (floor), 1 connection, 1 commit per 500  {copy_rate:10.0f} lines/s", flush=True)
    print(f"  raw COPY, 1 connection, all in 1 transaction     {bulk_rate:10.0f} lines/s", flush=True)
    print(f"  AppendBuildLogs, 1 appender             {one:10.0f} lines/s  ratio {one / copy_rate:.2f} (target >= 0.30)", flush=True)
    print(f"  AppendBuildLogs, {appenders} appenders on {appenders} builds {several:10.0f} lines/s  ratio {several / copy_rate:.2f}", flush=True)


# -- latency ---------------------------------------------------------------------

async def _paced(addresses: list[str], build_id: str, *, rate: float, size: int, seconds: float) -> dict[str, Any]:
    """Sequential appends of `size` lines, `rate` batches/s, alternating replicas."""
    channels = [grpc.aio.insecure_channel(a) for a in addresses]
    stubs = [build_log_pb2_grpc.BuildLogServiceStub(c) for c in channels]
    total = int(rate * seconds)
    rpc_ms: list[float] = []
    late = 0
    started = time.perf_counter()
    for batch in range(total):
        due = started + batch / rate
        pause = due - time.perf_counter()
        if pause > 0:
            await asyncio.sleep(pause)
        elif pause < -0.05:
            late += 1
        first = batch * size + 1
        request = build_log_pb2.AppendBuildLogsRequest(build_id=build_id, entries=entries(first, size), first_sequence=first)
        sent = time.perf_counter()
        await stubs[batch % len(stubs)].AppendBuildLogs(request, timeout=30)
        rpc_ms.append((time.perf_counter() - sent) * 1000)
    elapsed = time.perf_counter() - started
    for channel in channels:
        await channel.close()
    return {"batches": total, "lines": total * size, "elapsed": elapsed, "late": late,
            "rpc_p50": percentile(rpc_ms, 0.5), "rpc_p99": percentile(rpc_ms, 0.99)}


def latency(url: str, figures: Figures, *, followers: int = 100, rate: float = 100, size: int = 50, seconds: float = 15) -> None:
    replicas = [procs.server("server-replica-a", url), procs.server("server-replica-b", url)]
    groups: list[Followers] = []
    try:
        (build_id,) = new_builds(url, 1)
        half = followers // len(replicas)
        groups = [Followers(f"followers-{i}", r.address, [build_id], half, size) for i, r in enumerate(replicas)]
        for group in groups:
            group.wait_ready()
        meter = cpu.Meter({"replica A": replicas[0].pid, "replica B": replicas[1].pid,
                           "followers A": groups[0].proc.pid, "followers B": groups[1].proc.pid,
                           "appender": os.getpid()})
        sent = asyncio.run(_paced([r.address for r in replicas], build_id, rate=rate, size=size, seconds=seconds))
        for group in groups:
            if not group.wait_min(sent["lines"], timeout=30):
                figures.errors.append(f"latency: {group.proc.name} did not receive all {sent['lines']} lines")
        usage = meter.stop()
        cancel(replicas[0].address, build_id)
        results = [g.finish() for g in groups]
    finally:
        for group in groups:
            if group.proc.proc.poll() is None:
                group.proc.stop()
        for replica in replicas:
            replica.stop()
    merged: Counter[float] = Counter()
    for result in results:
        check_delivery(figures, f"latency ({result['streams']} followers)", result, sent["lines"])
        for value, count in result["latency_ms"]:
            merged[value] += count
    samples = sorted(merged.items())
    total = sum(merged.values())

    def pct(q: float) -> float:
        seen = 0
        for value, count in samples:
            seen += count
            if seen >= q * total:
                return value
        return float("nan")

    lost = sum(r["gaps"] for r in results)
    dup = sum(r["duplicates"] for r in results)
    figures.values.update({
        "latency.p50": pct(0.5), "latency.p99": pct(0.99), "latency.max": samples[-1][0] if samples else float("nan"),
        "latency.samples": total, "latency.lost": lost, "latency.duplicates": dup,
        "latency.rate": sent["lines"] / sent["elapsed"], "latency.late": sent["late"],
        "latency.append_p50": sent["rpc_p50"], "latency.append_p99": sent["rpc_p99"],
        "latency.cpu": usage, "latency.followers": followers, "latency.seconds": seconds,
    })
    print(f"  {followers} followers on 2 replicas, {sent['lines'] / sent['elapsed']:.0f} lines/s appended for "
          f"{sent['elapsed']:.1f} s ({sent['late']} batches sent >50 ms late)", flush=True)
    print(f"  append-to-follower p50 {pct(0.5):.1f} ms  p99 {pct(0.99):.1f} ms  max {samples[-1][0]:.1f} ms "
          f"(target p99 <= 50 ms); {total} line deliveries, lost {lost}, duplicated {dup}", flush=True)
    print(f"  AppendBuildLogs RPC p50 {sent['rpc_p50']:.1f} ms p99 {sent['rpc_p99']:.1f} ms; {usage.text()}", flush=True)


# -- memory ----------------------------------------------------------------------

def memory(url: str, figures: Figures, *, followers: int = 1000, hold: float = 16.0) -> None:
    """Peak RSS of a fresh server while `followers` idle streams follow as
    many builds: each on its own connection (the target's case), then 100
    per connection (to tell the cost of a connection from that of a stream).
    The hold covers one heartbeat round (STREAM_HEARTBEAT_SECONDS=15)."""
    for per, key in ((1, "memory"), (100, "memory.shared")):
        server = procs.server(f"server-{key}", url)
        group = None
        try:
            builds = new_builds(url, followers)
            time.sleep(1)
            idle = server.rss_mb()
            group = Followers(f"followers-{key}", server.address, builds, followers, per_connection=per)
            group.wait_ready(timeout=180)
            peak = server.rss_mb()
            deadline = time.monotonic() + hold
            while time.monotonic() < deadline:
                peak = max(peak, server.rss_mb())
                time.sleep(0.5)
            result = group.finish(timeout=0)
        finally:
            if group is not None and group.proc.proc.poll() is None:
                group.proc.stop()
            server.stop()
        if result["ended"] != {"stopped": followers}:
            figures.errors.append(f"{key}: streams ended {result['ended']} before the bench stopped them")
        connections = (followers + per - 1) // per
        figures.values.update({f"{key}.idle": idle, f"{key}.peak": peak, f"{key}.followers": followers,
                               f"{key}.connections": connections, f"{key}.ready_s": group.ready_s})
        print(f"  server RSS: {idle:.0f} MB idle, {peak:.0f} MB peak with {followers} idle followers of "
              f"{followers} builds over {connections} connections (target <= 100 MB); "
              f"{(peak - idle) * 1000 / followers:.0f} kB per follower; all connected in {group.ready_s:.1f} s", flush=True)
    figures.values["memory.hold"] = hold


# -- statements per batch ----------------------------------------------------------

STATEMENTS = (
    "SELECT query, calls FROM pg_stat_statements "
    "WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) "
    "AND query NOT LIKE '%pg_stat_statements%' ORDER BY calls DESC"
)
BACKGROUND = ("SELECT $1", "SELECT 1")  # the health check's ping, every HEALTH_CHECK_SECONDS


def statements(url: str, figures: Figures, *, counts: tuple[int, ...] = (1, 1000), batches: int = 100, size: int = 50, rate: float = 20) -> None:
    server = procs.server("server-statements", url)
    try:
        with psycopg.connect(url, autocommit=True) as admin:
            for count in counts:
                (build_id,) = new_builds(url, 1)
                group = Followers(f"followers-stmt-{count}", server.address, [build_id], count, size)
                try:
                    group.wait_ready(timeout=180)
                    time.sleep(0.5)
                    admin.execute("SELECT pg_stat_statements_reset()")
                    asyncio.run(_paced([server.address], build_id, rate=rate, size=size, seconds=batches / rate))
                    if not group.wait_min(batches * size):
                        figures.errors.append(f"statements: {count} followers did not get every line")
                    time.sleep(0.3)
                    rows = admin.execute(STATEMENTS).fetchall()
                    rss = server.rss_mb()
                    cancel(server.address, build_id)
                    result = group.finish()
                finally:
                    if group.proc.proc.poll() is None:
                        group.proc.stop()
                check_delivery(figures, f"statements ({count} followers)", result, batches * size)
                counted = [(q, c) for q, c in rows if q.strip() not in BACKGROUND]
                per_batch = sum(c for _, c in counted) / batches
                figures.values[f"statements.{count}"] = per_batch
                figures.values[f"statements.{count}.rows"] = [(" ".join(q.split())[:110], c) for q, c in counted]
                figures.values[f"statements.{count}.rss"] = rss
                figures.values[f"statements.{count}.background"] = [(q, c) for q, c in rows if q.strip() in BACKGROUND]
                print(f"  {count:>5} follower(s): {per_batch:.2f} statements per appended batch "
                      f"({sum(c for _, c in counted)} over {batches} batches; server RSS {rss:.0f} MB)", flush=True)
    finally:
        server.stop()
