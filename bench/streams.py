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
from dataclasses import dataclass, field
from typing import Any

import psycopg
from buildplatform.v1 import build_log_pb2, build_log_pb2_grpc, build_pb2, build_pb2_grpc

from bench import load, procs
from tests.support import open_aio_channel, open_channel

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
    """A bench.followers process following builds of `server` (or another
    follower process, `proc`, that prints the same lines), its progress read
    from its stdout."""

    def __init__(self, name: str, server: procs.Proc, builds: list[str], count: int, batch: int = 50,
                 per_connection: int = 1, *, proc: procs.Proc | None = None) -> None:
        self.proc = proc or procs.Proc(
            name, ["-m", "bench.followers", "--address", server.address, "--builds", ",".join(builds),
                   "--count", str(count), "--batch", str(batch), "--streams-per-connection", str(per_connection)],
            server.client_env(),
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


def cancel(server: procs.Proc, build_id: str) -> None:
    with open_channel(server.address, token=server.token) as channel:
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


async def _append_many(server: procs.Proc, build_id: str, batches: int, size: int) -> None:
    prebuilt = entries(1, size, stamp=False)
    async with open_aio_channel(server.address, token=server.token, options=[("grpc.max_send_message_length", 64 << 20)]) as channel:
        stub = build_log_pb2_grpc.BuildLogServiceStub(channel)
        for batch in range(batches):
            await stub.AppendBuildLogs(
                build_log_pb2.AppendBuildLogsRequest(build_id=build_id, entries=prebuilt, first_sequence=batch * size + 1)
            )


def ingest(url: str, figures: Figures, *, batches: int = 60, size: int = 500, appenders: int = 4) -> None:
    server = procs.server("server-ingest", url)
    try:
        builds = new_builds(url, 2 + appenders)
        asyncio.run(_append_many(server, builds[0], 4, size))  # warm-up
        copy_floor(url, builds[1], 4, size)
        copy_rate = copy_floor(url, builds[1], batches, size, after=4 * size)
        bulk_rate = copy_floor(url, builds[1], batches, size, after=(4 + batches) * size, per_batch=False)

        started = time.perf_counter()
        asyncio.run(_append_many(server, builds[0], batches, size))
        one = batches * size / (time.perf_counter() - started)

        async def many() -> None:
            await asyncio.gather(*(_append_many(server, b, batches, size) for b in builds[2:]))

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


# -- statements per batch ----------------------------------------------------------

STATEMENTS = (
    "SELECT query, calls FROM pg_stat_statements "
    "WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) "
    "AND query NOT LIKE '%pg_stat_statements%' ORDER BY calls DESC"
)
# On timers, not per batch: the health check's ping (every HEALTH_CHECK_SECONDS)
# and the position check of a follower that was silent for a heartbeat period
# (followers that connected more than STREAM_HEARTBEAT_SECONDS before the
# first batch make one each).
BACKGROUND = ("SELECT $1", "SELECT 1", "SELECT status, last_log_seq FROM builds WHERE id = $1")


def _background(query: str) -> bool:
    return " ".join(query.split()) in BACKGROUND


def statements(url: str, figures: Figures, *, counts: tuple[int, ...] = (1, 1000), batches: int = 100, size: int = 50, rate: float = 20) -> None:
    from bench.delivery import (
        paced,  # the same appender as the delivery bench (which imports this module)
    )

    server = procs.server("server-statements", url)
    try:
        with psycopg.connect(url, autocommit=True) as admin:
            for count in counts:
                (build_id,) = new_builds(url, 1)
                group = Followers(f"followers-stmt-{count}", server, [build_id], count, size)
                try:
                    group.wait_ready(timeout=180)
                    time.sleep(0.5)
                    admin.execute("SELECT pg_stat_statements_reset()")
                    asyncio.run(paced([server], build_id, rate=rate, size=size, seconds=batches / rate, broadcast=False))
                    if not group.wait_min(batches * size):
                        figures.errors.append(f"statements: {count} followers did not get every line")
                    time.sleep(0.3)
                    rows = admin.execute(STATEMENTS).fetchall()
                    rss = server.rss_mb()
                    cancel(server, build_id)
                    result = group.finish()
                finally:
                    if group.proc.proc.poll() is None:
                        group.proc.stop()
                check_delivery(figures, f"statements ({count} followers)", result, batches * size)
                counted = [(q, c) for q, c in rows if not _background(q)]
                per_batch = sum(c for _, c in counted) / batches
                figures.values[f"statements.{count}"] = per_batch
                figures.values[f"statements.{count}.rows"] = [(" ".join(q.split())[:110], c) for q, c in counted]
                figures.values[f"statements.{count}.rss"] = rss
                figures.values[f"statements.{count}.background"] = [(q, c) for q, c in rows if _background(q)]
                print(f"  {count:>5} follower(s): {per_batch:.2f} statements per appended batch "
                      f"({sum(c for _, c in counted)} over {batches} batches; server RSS {rss:.0f} MB)", flush=True)
    finally:
        server.stop()
