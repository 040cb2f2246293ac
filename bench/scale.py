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
The three paths are interleaved (rounds of a few seconds each, the order
reversed every other round) so that a shared machine's load falls on all
alike. A listener in another process (the follower's replica) LISTENs on
the channel and records when each (build, last sequence) is announced; the
wake-up delay is that time minus the moment the appender saw its commit
acknowledged (same host clock; NOTIFY in the commit can arrive before the
acknowledgement, so its p50 may be below zero).
Goal: at 100 and 1,000 builds, new >= 0.9 of plain.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import time
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from typing import Any

import psycopg

from bench.streams import Figures, new_builds
from server.live.notifier import Notifier
from server.store import feeds

POINTS = tuple(int(p) for p in os.environ.get("BENCH_SCALE_POINTS", "1,10,100,1000").split(","))
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
    # The append statement's row: the payload columns in the feed's order
    # (None for those left unset: metadata, step), then the wire size.
    values = {"level": "info", "message": f"{build} {FILLER}"}
    row = [values.get(column) for column in feeds.LOGS.columns] + [110 + feeds.SERVER_FIELDS_BYTES]
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
            print(f"    notifier: {notifier.sent} notifying commits, {notifier.sending / max(notifier.sent, 1) * 1000:.1f} ms "
                  "each on average", flush=True)
    return len(committed), committed


def _point(url: str, count: int, seconds: float, rounds: int) -> dict[str, dict[str, float]]:
    """The three paths at `count` builds (each its own builds), interleaved:
    `rounds` rounds of seconds / rounds per path, the order reversed every
    other round, so that a shared machine's load drifts over all alike."""
    builds = {path: new_builds(url, count) for path in PATHS}
    ctx = multiprocessing.get_context("spawn")
    ready, stop = ctx.Event(), ctx.Event()
    receive, send = ctx.Pipe(duplex=False)
    listener = ctx.Process(target=_listen, args=(url, feeds.LOGS.channel, ready, stop, send), daemon=True)
    listener.start()
    ready.wait(60)
    spent = dict.fromkeys(PATHS, 0.0)
    commits = dict.fromkeys(PATHS, 0)
    committed: dict[tuple[str, int], tuple[str, float]] = {}
    for round_ in range(rounds):
        for path in PATHS if round_ % 2 == 0 else tuple(reversed(PATHS)):
            began = time.perf_counter()
            made, times = asyncio.run(_run(url, builds[path], path, seconds / rounds))
            spent[path] += time.perf_counter() - began
            commits[path] += made
            committed.update({key: (path, at) for key, at in times.items()})
    time.sleep(0.3)
    stop.set()
    notes: list[tuple[float, str]] = receive.recv()
    listener.join(10)
    delays: dict[str, list[float]] = {path: [] for path in PATHS}
    sent = dict.fromkeys(PATHS, 0)
    for at, payload in notes:
        words = payload.split(" ")
        counted: set[str] = set()
        for index in range(0, len(words) - 1, 2):
            found = committed.get((words[index], int(words[index + 1])))
            if found is not None:
                delays[found[0]].append(at - found[1])
                counted.add(found[0])
        for path in counted:
            sent[path] += 1
    out: dict[str, dict[str, float]] = {}
    for path in PATHS:
        got = {"commits": commits[path] / spent[path], "appends": commits[path] * BATCH / spent[path],
               "notifications": sent[path] / spent[path]}
        ordered = sorted(delays[path])
        if ordered:
            got["p50"] = ordered[len(ordered) // 2] * 1000
            got["p99"] = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000
        out[path] = got
    return out


def scale(url: str, figures: Figures, *, seconds: float = 6.0, rounds: int = 3) -> None:
    with psycopg.connect(url) as conn:
        sync = conn.execute("SHOW synchronous_commit").fetchone()
        fsync = conn.execute("SHOW fsync").fetchone()
    print(f"  synchronous_commit={sync[0] if sync else '?'} fsync={fsync[0] if fsync else '?'}; "
          f"{CONNECTIONS} connections at most, batches of {BATCH} lines, {seconds:g}s per path in {rounds} interleaved rounds", flush=True)
    for count in POINTS:
        measured = _point(url, count, seconds, rounds)
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
