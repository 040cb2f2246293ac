"""Issue 16 section 1: appends at many builds at once, with and without
NOTIFY in their commits (server.live.notifier).

For 1, 10, 100 and 1,000 RUNNING builds appending at once (each append 10
lines of ~110 bytes, as an agent appends), three paths run in turn for
`seconds` each, on min(builds, CONNECTIONS) connections cycling over the
builds (PostgreSQL's own commits, no gRPC in between: what is measured is
the database's commit path):
- plain: the append statement of server.store.feeds (counter + rows, one
  statement, its own transaction) and no notification at all;
- old: the same statement with `pg_notify` in it (the path before issue 16:
  every append's commit takes PostgreSQL's notify lock);
- new: the plain statement, then the process's coalescing Notifier
  (server.live.notifier) told of the commit, as the core does: one
  notifying commit per NOTIFY_TICK_SECONDS for the whole process.
A listener in another process (the follower's replica) LISTENs on the
channel and records when each (build, last sequence) is announced; the
wake-up delay is that time minus the append's commit (same host clock).
Goal: at 100 and 1,000 builds, new >= 0.9 of plain.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import time
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from typing import Any

import psycopg

from bench.streams import Figures, new_builds
from server.live.notifier import Notifier
from server.store import feeds

POINTS = (1, 10, 100, 1000)
CONNECTIONS = 32
BATCH = 10
FILLER = "x" * 80
PATHS = ("plain", "old", "new")


def _listen(url: str, channel: str, ready: Any, stop: Any, out: Connection) -> None:
    """Another replica's LISTEN connection: (receipt time, payload) of every notification."""
    got: list[tuple[float, str]] = []
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"LISTEN {channel}")
        ready.set()
        while not stop.is_set():
            for note in conn.notifies(timeout=0.2):
                got.append((time.time(), note.payload))
    out.send(got)
    out.close()


def _rows(build: str) -> str:
    row = ["info", f"{build} {FILLER}", None, 110 + feeds.SERVER_FIELDS_BYTES]
    return json.dumps([row] * BATCH)


async def _run(url: str, builds: list[str], path: str, seconds: float) -> tuple[int, dict[tuple[str, int], float]]:
    """Commits made and the commit time of each (build, last)."""
    kind = feeds.LOGS
    statement = feeds._one_statement(kind, False, False, notify=path == "old")
    notifier = Notifier(url) if path == "new" else None
    if notifier is not None:
        notifier.start()
    committed: dict[tuple[str, int], float] = {}
    deadline = time.monotonic() + seconds
    connections = min(len(builds), CONNECTIONS)

    async def work(index: int) -> None:
        mine = builds[index::connections]
        rows = {build: _rows(build) for build in mine}
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            turn = 0
            while time.monotonic() < deadline:
                build = mine[turn % len(mine)]
                turn += 1
                cur = await conn.execute(statement, {
                    "n": BATCH, "id": build, "expected": 0, "now": datetime.now(UTC), "secrets": None, "ms": "10000",
                    "rows": rows[build],
                })
                found = await cur.fetchone()
                assert found is not None, "the bench build refused an append"
                last = int(found[0])
                committed[(build, last)] = time.time()
                if notifier is not None:
                    notifier.note(kind.channel, build, last)

    try:
        await asyncio.gather(*(work(index) for index in range(connections)))
        if notifier is not None:
            await asyncio.sleep(0.1)   # the last tick goes out
    finally:
        if notifier is not None:
            await notifier.close()
    return len(committed), committed


def _point(url: str, count: int, path: str, seconds: float) -> dict[str, float]:
    builds = new_builds(url, count)
    ctx = multiprocessing.get_context("spawn")
    ready, stop = ctx.Event(), ctx.Event()
    receive, send = ctx.Pipe(duplex=False)
    listener = ctx.Process(target=_listen, args=(url, feeds.LOGS.channel, ready, stop, send), daemon=True)
    listener.start()
    ready.wait(30)
    began = time.perf_counter()
    commits, committed = asyncio.run(_run(url, builds, path, seconds))
    spent = time.perf_counter() - began
    time.sleep(0.3)
    stop.set()
    notes: list[tuple[float, str]] = receive.recv()
    listener.join(10)
    delays: list[float] = []
    for at, payload in notes:
        words = payload.split(" ")
        for index in range(0, len(words) - 1, 2):
            made = committed.get((words[index], int(words[index + 1])))
            if made is not None:
                delays.append(at - made)
    delays.sort()
    figures = {"commits": commits / spent, "appends": commits * BATCH / spent, "notifications": len(notes) / spent}
    if delays:
        figures["p50"] = delays[len(delays) // 2] * 1000
        figures["p99"] = delays[min(len(delays) - 1, int(len(delays) * 0.99))] * 1000
        figures["announced"] = len(delays) / max(commits, 1)
    return figures


def scale(url: str, figures: Figures, *, seconds: float = 4.0) -> None:
    with psycopg.connect(url) as conn:
        sync = conn.execute("SHOW synchronous_commit").fetchone()
        fsync = conn.execute("SHOW fsync").fetchone()
    print(f"  synchronous_commit={sync[0] if sync else '?'} fsync={fsync[0] if fsync else '?'}; "
          f"{CONNECTIONS} connections at most, batches of {BATCH} lines, {seconds:g}s per path", flush=True)
    for count in POINTS:
        measured: dict[str, dict[str, float]] = {}
        # Alternate the order so that a busy machine does not favour one path.
        order = PATHS if POINTS.index(count) % 2 == 0 else tuple(reversed(PATHS))
        for path in order:
            measured[path] = _point(url, count, path, seconds)
        plain = measured["plain"]["appends"]
        for path in PATHS:
            got = measured[path]
            figures.values[f"scale.{count}.{path}"] = got
            delay = (f"follower on another replica woken p50 {got['p50']:.1f} ms, p99 {got['p99']:.1f} ms"
                     if "p50" in got else "no notification")
            print(f"  {count:5} builds {path:5}: {got['appends']:9,.0f} lines/s {got['commits']:7,.0f} commits/s "
                  f"({got['appends'] / plain:.2f} of plain), {got['notifications']:,.0f} notifications/s; {delay}",
                  flush=True)
        ratio = measured["new"]["appends"] / plain
        old = measured["old"]["appends"] / plain
        goal = count in (100, 1000)
        met = "met" if ratio >= 0.9 else "NOT met"
        figures.rows.append((
            f"Appends at {count:,} builds at once (10-line batches, {min(count, CONNECTIONS)} connections), "
            "notifier path (issue 16)",
            f"{measured['new']['appends']:,.0f} lines/s, {measured['new']['commits']:,.0f} commits/s; "
            f"other replica woken p50 {measured['new'].get('p50', 0):.1f} ms, p99 {measured['new'].get('p99', 0):.1f} ms",
            f"plain inserts (no notification), same run: {plain:,.0f} lines/s; NOTIFY in the commit: "
            f"{measured['old']['appends']:,.0f} lines/s ({old:.2f}), woken p50 {measured['old'].get('p50', 0):.1f} ms, "
            f"p99 {measured['old'].get('p99', 0):.1f} ms",
            f"{ratio:.2f} of plain" + (f" (target >= 0.9: **{met}**)" if goal else ""),
        ))
