"""Issue 14, "Measured in make bench": the log lifecycle, each figure beside
its floor measured in the same run.

1. Reads of an archived build beside the same reads of the same build hot:
   a 1,000,000-line build (bench.feeds.load_lines), finished; through a real
   server (the generated stubs) StreamBuildLogs tail_lines=10 (median ms)
   and a catch-up from after_sequence=0 (lines/s) while it is hot; then the
   server's own archiver archives it (its finish_time is moved back past
   ARCHIVE_AFTER_SECONDS in SQL; the bench waits for archive_state
   'archived') and the same reads run again. The tail's lines must be the
   same bytes. Goals: catch-up from the archive at least as fast as from hot
   rows; tail within 2x of hot.
2. Appends per second while the archiver works: one appender, batches of
   500 lines to 4 running builds, for a fixed time, beside a backlog of
   finished builds (40 x 25,000 lines) that a server with ARCHIVE=false
   leaves alone and a server with ARCHIVE_AFTER_SECONDS=0 archives in the
   background; off, on, off again (the floor is the mean of the two offs).
   Goal: at least 0.9.
3. Hot table bytes after a simulated month: a database of its own,
   migrated with HOT_PARTITION_SECONDS=W; a simulated clock runs a month in
   steps; each step starts a build (its id a cuid of the simulated time, so
   it lands in that window), writes its lines, finishes the builds whose
   hour is over and, once ARCHIVE_AFTER_SECONDS passed, lets the real
   Archiver (server.archive.job) archive them and the real Janitor
   (server.archive.janitor, its clock the simulated one) create and drop
   windows. The archive_time the archiver writes is the real now(); the
   bench moves it to the simulated time, so the grace counts in simulated
   time. Then build_logs' partitions (tables and indexes) against the live
   window alone: a table like build_logs, holding only the rows of the
   builds still hot. Goal: within 1.2x; several W show what each gives.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from buildplatform.v1 import build_log_pb2 as L
from buildplatform.v1 import build_log_pb2_grpc

from bench import load, procs
from bench.env import RUN_DIR
from bench.feeds import LINES, load_lines
from bench.streams import Figures, entries, new_builds
from server.store import feeds
from tests.support import open_aio_channel, open_channel

FINISH = "UPDATE builds SET status = 'COMPLETED', finish_time = now(), update_time = now() WHERE id = ANY(%s)"


def _archive_dir(name: str) -> str:
    path = RUN_DIR / name
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return str(path)


# -- 1. reads, hot and archived -----------------------------------------------------------


def _tail(stub: Any, build_id: str) -> list[bytes]:
    return [entry.SerializeToString() for r in stub.StreamBuildLogs(
        L.StreamBuildLogsRequest(build_id=build_id, tail_lines=10), timeout=120) for entry in r.logs]


def _catch_up(stub: Any, build_id: str) -> tuple[int, float]:
    started = time.perf_counter()
    count = sum(len(r.logs) for r in stub.StreamBuildLogs(
        L.StreamBuildLogsRequest(build_id=build_id, after_sequence=0), timeout=600))
    return count, time.perf_counter() - started


def _reads(stub: Any, build_id: str, calls: int, catch_ups: int) -> tuple[float, list[bytes], float, int]:
    """(median tail ms, the tail's lines, best catch-up lines/s, lines of the catch-up)."""
    tail = _tail(stub, build_id)   # warm
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        tail = _tail(stub, build_id)
        times.append((time.perf_counter() - started) * 1000)
    rates, count = [], 0
    for _ in range(catch_ups):
        count, seconds = _catch_up(stub, build_id)
        rates.append(count / seconds)
    return statistics.median(times), tail, max(rates), count


def _reads_bench(url: str, figures: Figures, lines: int, calls: int, catch_ups: int) -> None:
    (build_id,) = new_builds(url, 1)
    print(f"  loading {lines:,} lines ...", flush=True)
    load_lines(url, build_id, lines)
    with psycopg.connect(url) as conn:
        conn.execute(FINISH, ([build_id],))
    server = procs.server(
        "server-lifecycle-reads", url, LOG_LEVEL="WARNING", ARCHIVE_URL=_archive_dir("archive-reads"),
        ARCHIVE="true", ARCHIVE_AFTER_SECONDS="3600", ARCHIVE_INTERVAL_SECONDS="1", JANITOR_SECONDS="0",
    )
    try:
        with open_channel(server.address, token=server.token) as channel:
            stub = build_log_pb2_grpc.BuildLogServiceStub(channel)
            hot = _reads(stub, build_id, calls, catch_ups)
            print(f"  hot:      tail {hot[0]:7.1f} ms  catch-up {hot[2]:10,.0f} lines/s", flush=True)
            began = time.perf_counter()
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("UPDATE builds SET finish_time = now() - interval '2 hours' WHERE id = %s", (build_id,))
                while True:
                    row = conn.execute("SELECT archive_state FROM builds WHERE id = %s", (build_id,)).fetchone()
                    if row and row[0] == "archived":
                        break
                    if time.perf_counter() - began > 900:
                        raise RuntimeError(f"the archiver did not archive the build in 900 s (state {row})")
                    time.sleep(0.2)
                chunks, stored = conn.execute(
                    "SELECT count(*), sum(byte_length) FROM archive_chunks WHERE build_id = %s AND kind = 'log'",
                    (build_id,)).fetchone() or (0, 0)
            archived_s = time.perf_counter() - began
            print(f"  archived by the server's archiver in {archived_s:.1f} s ({chunks} chunks, "
                  f"{(stored or 0) / 1e6:.1f} MB)", flush=True)
            cold = _reads(stub, build_id, calls, catch_ups)
            print(f"  archived: tail {cold[0]:7.1f} ms  catch-up {cold[2]:10,.0f} lines/s", flush=True)
    finally:
        server.stop()
    if hot[1] != cold[1] or len(hot[1]) != 10:
        figures.errors.append("lifecycle: the archived tail differs from the hot tail")
    if hot[3] != lines or cold[3] != lines:
        figures.errors.append(f"lifecycle: catch-ups gave {hot[3]:,} (hot) and {cold[3]:,} (archived) lines, not {lines:,}")
    figures.values.update({"lifecycle.tail_ms": (hot[0], cold[0]), "lifecycle.catch_up": (hot[2], cold[2]),
                           "lifecycle.archive_seconds": archived_s, "lifecycle.chunks": chunks})
    ratio = cold[0] / hot[0]
    figures.rows.append((
        f"StreamBuildLogs tail_lines=10 of a {lines:,}-line ARCHIVED build (median of {calls})",
        f"{cold[0]:,.1f} ms",
        f"the same build hot, same server: {hot[0]:,.1f} ms",
        f"{ratio:.2f}x hot (goal <= 2x: **{'met' if ratio <= 2 else 'NOT met'}**)",
    ))
    speed = cold[2] / hot[2]
    figures.rows.append((
        f"StreamBuildLogs catch-up from 0 of the {lines:,}-line ARCHIVED build (best of {catch_ups})",
        f"{cold[2]:,.0f} lines/s",
        f"the same build hot, same server: {hot[2]:,.0f} lines/s",
        f"{speed:.2f} of hot (goal >= 1: **{'met' if speed >= 1 else 'NOT met'}**)",
    ))
    figures.rows.append((
        f"the server's archiver on that build ({lines:,} lines, {chunks} chunks)",
        f"{lines / archived_s:,.0f} lines/s ({archived_s:.1f} s from due to 'archived', "
        f"{(stored or 0) / 1e6:.1f} MB stored)",
        "-", "-",
    ))


# -- 2. appends while the archiver works ----------------------------------------------------


def _backlog(url: str, builds: int, lines: int) -> list[str]:
    ids = new_builds(url, builds)
    with psycopg.connect(url) as conn:
        conn.execute(
            "INSERT INTO build_logs (build_id, seq, level, message, metadata, create_time, wire_bytes) "
            "SELECT b, g, 'info', 'line ' || g || ' [compile] src/components/TodoList.tsx: 14 modules ' || md5(b || g), "
            f"NULL, now(), {feeds.SERVER_FIELDS_BYTES} + 92 "
            "FROM unnest(%(ids)s::text[]) AS b, generate_series(1, %(n)s) AS g",
            {"ids": ids, "n": lines},
        )
        conn.execute("UPDATE builds SET last_log_seq = %s, last_log_time = now() WHERE id = ANY(%s)", (lines, ids))
        conn.execute(FINISH, (ids,))
        conn.execute("UPDATE builds SET finish_time = now() - interval '1 hour' WHERE id = ANY(%s)", (ids,))
    return ids


async def _append(server: procs.Proc, builds: list[str], first: dict[str, int], seconds: float,
                  size: int) -> float:
    batch = entries(1, size, stamp=False)
    sent = 0
    async with open_aio_channel(server.address, token=server.token,
                                options=[("grpc.max_send_message_length", 64 << 20)]) as channel:
        logs = build_log_pb2_grpc.BuildLogServiceStub(channel)
        for build_id in builds:   # warm
            await logs.AppendBuildLogs(L.AppendBuildLogsRequest(build_id=build_id, entries=batch,
                                                                first_sequence=first[build_id]))
            first[build_id] += size
        began = time.perf_counter()
        while time.perf_counter() - began < seconds:
            for build_id in builds:
                await logs.AppendBuildLogs(L.AppendBuildLogsRequest(build_id=build_id, entries=batch,
                                                                    first_sequence=first[build_id]))
                first[build_id] += size
                sent += size
        return sent / (time.perf_counter() - began)


def _archived(url: str, ids: list[str]) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM builds WHERE id = ANY(%s) AND archive_state = 'archived'",
                           (ids,)).fetchone()
    return int(row[0]) if row else 0


def _appends_bench(url: str, figures: Figures, seconds: float, backlog: tuple[int, int], size: int = 500) -> None:
    print(f"  loading a backlog of {backlog[0]} finished builds x {backlog[1]:,} lines ...", flush=True)
    ids = _backlog(url, *backlog)
    running = new_builds(url, 4)
    first = dict.fromkeys(running, 1)
    rates: dict[str, list[float]] = {"off": [], "on": []}
    done = (0, 0)
    store = _archive_dir("archive-appends")
    for mode in ("off", "on", "off"):
        env = {"ARCHIVE": "false"} if mode == "off" else {"ARCHIVE": "true", "ARCHIVE_AFTER_SECONDS": "0", "ARCHIVE_INTERVAL_SECONDS": "1"}
        server = procs.server(f"server-lifecycle-appends-{mode}", url, LOG_LEVEL="WARNING", ARCHIVE_URL=store,
                              JANITOR_SECONDS="0", **env)
        try:
            if mode == "on":   # the archiver has begun: the first backlog build is claimed
                deadline = time.monotonic() + 60
                with psycopg.connect(url, autocommit=True) as conn:
                    while time.monotonic() < deadline and not conn.execute(
                            "SELECT 1 FROM archive_claims WHERE build_id = ANY(%s) UNION ALL "
                            "SELECT 1 FROM builds WHERE id = ANY(%s) AND archive_state = 'archived' LIMIT 1",
                            (ids, ids)).fetchone():
                        time.sleep(0.1)
                before = _archived(url, ids)
            rate = asyncio.run(_append(server, running, first, seconds, size))
            if mode == "on":
                done = (before, _archived(url, ids))
            rates[mode].append(rate)
            print(f"  archiver {mode:3}: {rate:10,.0f} lines/s"
                  + (f"  (backlog builds archived: {done[0]} before, {done[1]} after, of {len(ids)})"
                     if mode == "on" else ""), flush=True)
        finally:
            server.stop()
    off = statistics.mean(rates["off"])
    on = rates["on"][0]
    busy = done[1] < len(ids)
    if not busy:
        figures.notes.append(f"lifecycle: the archiver emptied its backlog before the {seconds:g} s of appends ended")
    figures.values.update({"lifecycle.appends": (on, rates["off"]), "lifecycle.archived_during": done})
    ratio = on / off
    figures.rows.append((
        f"AppendBuildLogs, 1 appender, batches of {size} to 4 builds, {seconds:g} s, while the archiver works "
        f"(backlog {backlog[0]} x {backlog[1]:,} lines; {done[1] - done[0]} archived meanwhile"
        f"{', busy throughout' if busy else ', backlog emptied early'})",
        f"{on:,.0f} lines/s",
        f"archiver off (ARCHIVE=false), same load, before and after: {off:,.0f} lines/s "
        f"({', '.join(f'{r:,.0f}' for r in rates['off'])})",
        f"{ratio:.2f} of off (goal >= 0.9: **{'met' if ratio >= 0.9 else 'NOT met'}**)",
    ))


# -- 3. a simulated month -------------------------------------------------------------------


def _cuid(at: datetime, n: int) -> str:
    from server.store.partitions import bound

    return bound(at) + f"{n:08x}" + os.urandom(6).hex()


PARTS = """
SELECT coalesce(sum(pg_total_relation_size(i.inhrelid)), 0)::bigint, count(*)
FROM pg_inherits AS i WHERE i.inhparent = 'build_logs'::regclass
"""


async def _month(url: str, *, window: int, grace: int, days: int, step_minutes: int, runs_minutes: int,
                 after_minutes: int, lines: int) -> dict[str, Any]:
    from server.archive.janitor import Janitor
    from server.archive.job import Archiver
    from server.archive.objects import open_store
    from server.store.db import Database

    start = (datetime.now(UTC) + timedelta(days=2)).replace(minute=0, second=0, microsecond=0)
    clock = [start]
    store = open_store(_archive_dir(f"archive-month-{window}"))
    db = Database(url, pool_size=2, max_overflow=0, timeout=60)
    await db.open()
    archiver = Archiver(db, store, after_seconds=0, interval_seconds=1, lease_seconds=600)
    janitor = Janitor(database_url=url, store=store, default_days=90, interval=60, window_seconds=window,
                      grace=timedelta(seconds=grace), timeout=30, clock=lambda: clock[0])
    user, project = load.uid("u", 1), load.uid("p", 1)
    started: list[tuple[datetime, str]] = []
    finished: list[tuple[datetime, str]] = []
    dropped = 0
    steps = days * 24 * 60 // step_minutes
    try:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            for n in range(steps):
                now = clock[0] = start + timedelta(minutes=step_minutes * n)
                dropped += len((await janitor.round()).dropped)
                build_id = _cuid(now, n)
                await conn.execute(
                    "INSERT INTO builds (id, user_id, project_id, status, app_spec, create_time, update_time, "
                    "start_time, last_log_seq, last_log_time) VALUES (%s, %s, %s, 'RUNNING', '# month', %s, %s, %s, %s, %s)",
                    (build_id, user, project, now, now, now, lines, now))
                await conn.execute(
                    "INSERT INTO build_logs (build_id, seq, level, message, metadata, create_time, wire_bytes) "
                    "SELECT %(id)s::text, g, 'info', 'line ' || g || ' [compile] src/components/TodoList.tsx ' || md5(%(id)s::text || g), "
                    f"NULL, %(now)s, {feeds.SERVER_FIELDS_BYTES} + 90 FROM generate_series(1, %(n)s) AS g",
                    {"id": build_id, "now": now, "n": lines})
                started.append((now, build_id))
                # The janitor's grace compares archive_time with the real now(): every
                # simulated step ages each archive_time by the step.
                await conn.execute("UPDATE builds SET archive_time = archive_time - make_interval(mins => %s) "
                                   "WHERE archive_state = 'archived'", (step_minutes,))
                while started and started[0][0] + timedelta(minutes=runs_minutes) <= now:
                    finished.append((started[0][0] + timedelta(minutes=runs_minutes), started.pop(0)[1]))
                due = []
                while finished and finished[0][0] + timedelta(minutes=after_minutes) <= now:
                    due.append(finished.pop(0)[1])
                if due:
                    # Finished and due now (the archiver compares finish_time with the real now()).
                    await conn.execute(FINISH, (due,))
                    await conn.execute("UPDATE builds SET finish_time = now() - interval '1 second' "
                                       "WHERE id = ANY(%s)", (due,))
                    while await archiver.run_once():
                        pass
            dropped += len((await janitor.round()).dropped)
            await conn.execute("VACUUM ANALYZE build_logs")
            hot_bytes, partitions = (await (await conn.execute(PARTS)).fetchone()) or (0, 0)
            await conn.execute("DROP TABLE IF EXISTS bench_live_window")
            await conn.execute("CREATE TABLE bench_live_window (LIKE build_logs INCLUDING ALL)")
            await conn.execute(
                "INSERT INTO bench_live_window SELECT l.* FROM build_logs AS l JOIN builds AS b ON b.id = l.build_id "
                "WHERE b.archive_state = 'hot'")
            await conn.execute("VACUUM ANALYZE bench_live_window")
            row = await (await conn.execute(
                "SELECT pg_total_relation_size('bench_live_window'), (SELECT count(*) FROM bench_live_window), "
                "(SELECT count(*) FROM build_logs), "
                "(SELECT count(*) FROM builds WHERE archive_state = 'archived' AND id >= %s)",
                (_cuid(start, 0)[:9],))).fetchone()
            assert row is not None
            live_bytes, live_rows, hot_rows, archived = row
            await conn.execute("DROP TABLE bench_live_window")
    finally:
        await janitor.stop()
        await db.close()
    return {"window": window, "grace": grace, "builds": steps, "archived": archived, "dropped": dropped,
            "partitions": partitions, "hot_bytes": hot_bytes, "hot_rows": hot_rows,
            "live_bytes": live_bytes, "live_rows": live_rows}


def _month_bench(url: str, figures: Figures, settings: list[tuple[int, int]], **shape: int) -> None:
    import urllib.parse

    from server import migrate

    split = urllib.parse.urlsplit(url)
    for window, grace in settings:
        name = f"bench_month_{window}_{grace}"
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name}")
            conn.execute(f"CREATE DATABASE {name}")
        month_url = urllib.parse.urlunsplit(split._replace(path=f"/{name}"))
        previous = os.environ.get("HOT_PARTITION_SECONDS")
        os.environ["HOT_PARTITION_SECONDS"] = str(window)
        try:
            migrate.upgrade(month_url)
        finally:
            if previous is None:
                os.environ.pop("HOT_PARTITION_SECONDS", None)
            else:
                os.environ["HOT_PARTITION_SECONDS"] = previous
        load.load(month_url, users=1, builds=1)
        began = time.perf_counter()
        got = asyncio.run(_month(month_url, window=window, grace=grace, **shape))
        ratio = got["hot_bytes"] / max(1, got["live_bytes"])
        print(f"  HOT_PARTITION_SECONDS={window} GRACE={grace}: {got['builds']} builds, {got['archived']} archived, "
              f"{got['dropped']} partitions dropped, {got['partitions']} left; hot {got['hot_bytes'] / 1e6:.1f} MB "
              f"({got['hot_rows']:,} rows) vs live window {got['live_bytes'] / 1e6:.1f} MB ({got['live_rows']:,} rows): "
              f"{ratio:.2f}x  [{time.perf_counter() - began:.0f} s]", flush=True)
        figures.values[f"lifecycle.month.{window}.{grace}"] = got
        figures.rows.append((
            f"build_logs tables+indexes after {shape['days']} simulated days, HOT_PARTITION_SECONDS={window}, "
            f"HOT_PARTITION_GRACE_SECONDS={grace} (a build every {shape['step_minutes']} min, "
            f"{shape['lines']:,} lines, running {shape['runs_minutes']} min, archived {shape['after_minutes']} min after; "
            f"{got['dropped']} windows dropped, {got['partitions']} partitions left)",
            f"{got['hot_bytes'] / 1e6:,.1f} MB ({got['hot_rows']:,} rows)",
            f"the live window alone (the rows of builds still hot, in one table like build_logs): "
            f"{got['live_bytes'] / 1e6:,.1f} MB ({got['live_rows']:,} rows)",
            f"{ratio:.2f}x (goal <= 1.2x: **{'met' if ratio <= 1.2 else 'NOT met'}**)",
        ))
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name}")


MONTH = {"days": 3, "step_minutes": 30, "runs_minutes": 60, "after_minutes": 10, "lines": 500}
MONTH_SETTINGS = [(3600, 3600), (3600, 0), (600, 0)]
# A month at this pace takes the bench half an hour (the janitor rounds): three
# simulated days reach the steady state (windows older than window + grace
# + ARCHIVE_AFTER are dropped as they come), BENCH_LIFECYCLE_DAYS=30 runs a month.


def lifecycle(url: str, figures: Figures, *, lines: int = LINES) -> None:
    parts = (
        ("reads", lambda: _reads_bench(url, figures, lines, calls=20, catch_ups=2)),
        ("appends", lambda: _appends_bench(url, figures, seconds=20, backlog=(40, 25_000))),
        ("month", lambda: _month_bench(url, figures, MONTH_SETTINGS,
                                       **{**MONTH, "days": int(os.environ.get("BENCH_LIFECYCLE_DAYS") or MONTH["days"])})),
    )
    only = {p for p in os.environ.get("BENCH_LIFECYCLE_PARTS", "").split(",") if p}
    for name, part in parts:
        if only and name not in only:
            continue
        try:
            part()
        except Exception as error:   # the other parts still report
            import traceback

            traceback.print_exc()
            figures.errors.append(f"lifecycle {name}: {type(error).__name__}: {error}")
