"""WAL and disk bytes per appended line (docs/scale.md): the append's own
statement (server.store.feeds._one_statement) run directly, n lines of 110
bytes per append over 100 RUNNING builds, 100,000 lines per n, in a fresh
database of an embedded PostgreSQL of its own (a CHECKPOINT before each n).
Byte counts, not timings: a busy machine does not change them.

    .venv/bin/python -m bench.wal [data_dir]
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime

import psycopg

from bench import load
from bench.streams import new_builds
from server import embedded, migrate
from server.store import feeds

MESSAGE = "x" * 110
LINES = 100_000
PARTITIONS = (
    "SELECT coalesce(sum(pg_total_relation_size(inhrelid)), 0) FROM pg_inherits "
    "WHERE inhparent = 'build_logs'::regclass"
)


def _one(conn: psycopg.Connection[tuple[object, ...]], sql: str) -> object:
    row = conn.execute(sql).fetchone()
    assert row is not None
    return row[0]


def measure(url: str, n: int) -> str:
    builds = new_builds(url, 100)
    statement = feeds._one_statement(feeds.LOGS, True)
    rows = json.dumps([["info", MESSAGE, None, len(MESSAGE) + feeds.SERVER_FIELDS_BYTES]] * n)
    appends = LINES // n
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CHECKPOINT")
        lsn = _one(conn, "SELECT pg_current_wal_lsn()")
        size = int(str(_one(conn, PARTITIONS)))
        nxt = dict.fromkeys(builds, 1)
        for i in range(appends):
            build = builds[i % len(builds)]
            got = conn.execute(statement, {
                "n": n, "id": build, "expected": nxt[build], "now": datetime.now(UTC), "secrets": None,
                "ms": "10000", "rows": rows,
            }).fetchone()
            assert got is not None, "an append was refused"
            nxt[build] = int(str(got[0])) + 1
        found = conn.execute("SELECT pg_current_wal_lsn() - %s::pg_lsn", (lsn,)).fetchone()
        assert found is not None
        wal = int(found[0])
        disk = int(str(_one(conn, PARTITIONS))) - size
    return (f"{n} lines per append: WAL {wal / LINES:.0f} B per line ({wal / appends:,.0f} B per append), "
            f"table and indexes {disk / LINES:.0f} B per line ({LINES:,} lines of {len(MESSAGE)} B)")


def main() -> None:
    server, url = embedded.start(sys.argv[1] if len(sys.argv) > 1 else ".data/bench-wal")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS bench_wal")
        conn.execute("CREATE DATABASE bench_wal")
    db = url.replace("/postgres?", "/bench_wal?")
    migrate.upgrade(db)
    load.load(db, users=1, builds=1)
    for n in (50, 10):
        print(measure(db, n), flush=True)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP DATABASE bench_wal")
    del server


if __name__ == "__main__":
    main()
