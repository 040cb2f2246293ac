"""Migration 0004 on a database with rows: build_logs and build_events become
partitioned by build id without losing a row, the old table becomes the
partition below the first window, ids continue from the same sequence, a
read by build id touches one partition, and downgrade gives the rows back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import cuid
import psycopg

from server import migrate
from server.store import partitions
from tests.integration.test_migrations import empty_database  # noqa: F401  (fixture)

OLD = "c" + "b" * 24                     # a past id: below every window
STRANGE = "zz-not-a-cuid"                # above every window: the DEFAULT partition


def window_of(build_id: str) -> datetime:
    """The start of the window holding a cuid's creation time."""
    return partitions.window_start(partitions.time_of_bound(build_id[:9]))


def _rows(conn: psycopg.Connection, table: str) -> list[tuple]:
    return conn.execute(f"SELECT build_id, seq, id, create_time FROM {table} ORDER BY id").fetchall()


def _where(conn: psycopg.Connection, table: str) -> dict[str, str]:
    rows = conn.execute(f"SELECT DISTINCT build_id, tableoid::regclass::text FROM {table}").fetchall()
    return dict(rows)


def _seed(conn: psycopg.Connection, builds: tuple[str, ...]) -> None:
    conn.execute("INSERT INTO users (id, clerk_id, email, create_time, update_time) VALUES ('u', 'k', 'a@b', now(), now())")
    conn.execute("INSERT INTO projects (id, user_id, name, create_time, update_time) VALUES ('p', 'u', 'p', now(), now())")
    for build in builds:
        conn.execute(
            "INSERT INTO builds (id, user_id, project_id, status, app_spec, create_time, update_time, "
            "last_log_seq, last_event_seq) VALUES (%s, 'u', 'p', 'COMPLETED', '#', now(), now(), 3, 2)",
            (build,),
        )
        for seq in (1, 2, 3):
            conn.execute(
                "INSERT INTO build_logs (build_id, seq, level, message, create_time, wire_bytes) "
                "VALUES (%s, %s, 'info', %s, now(), 100)",
                (build, seq, f"{build} line {seq}"),
            )
        for seq in (1, 2):
            conn.execute(
                "INSERT INTO build_events (build_id, seq, type, data, create_time, wire_bytes) "
                "VALUES (%s, %s, 't', '{}', now(), 100)",
                (build, seq),
            )


def test_upgrade_keeps_every_row_in_its_partition_and_downgrade_gives_them_back(empty_database):  # noqa: F811
    # An id of now, minted just before the migration that makes the window
    # of now (minted at import, it fell below the first window when the
    # suite crossed an hour before this test ran).
    now_id = cuid.cuid()
    migrate.upgrade(empty_database, "0003")
    with psycopg.connect(empty_database, autocommit=True) as conn:
        _seed(conn, (OLD, now_id, STRANGE))
        before = {table: _rows(conn, table) for table in partitions.TABLES}
    migrate.upgrade(empty_database)
    with psycopg.connect(empty_database, autocommit=True) as conn:
        for table in partitions.TABLES:
            assert _rows(conn, table) == before[table]
            where = _where(conn, table)
            start = window_of(now_id)
            assert where == {
                OLD: partitions.initial_name(table),
                now_id: partitions.window_name(table, start),
                STRANGE: partitions.default_name(table),
            }
        # The id keeps coming from one sequence, after the old identity's.
        conn.execute(
            "INSERT INTO build_logs (build_id, seq, level, message, create_time, wire_bytes) "
            "VALUES (%s, 4, 'info', 'new', now(), 100), (%s, 4, 'warn', 'new', now(), 100)",
            (OLD, now_id),
        )
        new_ids = [row[0] for row in conn.execute("SELECT id FROM build_logs WHERE seq = 4 ORDER BY id").fetchall()]
        assert new_ids == [max(row[2] for row in before["build_logs"]) + 1, max(row[2] for row in before["build_logs"]) + 2]
        assert conn.execute("SELECT archive_state FROM builds WHERE id = %s", (OLD,)).fetchone() == ("hot",)
        # A build's delete still cascades to its rows in its partition.
        conn.execute("DELETE FROM builds WHERE id = %s", (STRANGE,))
        assert conn.execute("SELECT count(*) FROM build_logs WHERE build_id = %s", (STRANGE,)).fetchone() == (0,)
    migrate.downgrade(empty_database, "0003")
    with psycopg.connect(empty_database, autocommit=True) as conn:
        rows = _rows(conn, "build_logs")
        assert [row[:2] for row in rows] == [
            *[(b, s) for b, s, _, _ in before["build_logs"] if b != STRANGE], (OLD, 4), (now_id, 4)
        ]
        assert conn.execute(
            "SELECT relkind FROM pg_class WHERE relname = 'build_logs'"
        ).fetchone() == ("r",)
        conn.execute(
            "INSERT INTO build_logs (build_id, seq, level, message, create_time, wire_bytes) "
            "VALUES (%s, 5, 'info', 'after', now(), 100)",
            (OLD,),
        )
        assert conn.execute("SELECT max(id) FROM build_logs").fetchone() == (max(row[2] for row in rows) + 1,)


def _plan(conn: psycopg.Connection, query: str, build: str) -> str:
    rows = conn.execute(f"EXPLAIN (COSTS OFF) {query}", (build,)).fetchall()
    return "\n".join(row[0] for row in rows)


def test_a_read_by_build_id_touches_one_partition(empty_database):  # noqa: F811
    migrate.upgrade(empty_database)
    with psycopg.connect(empty_database, autocommit=True) as conn:
        for table, column in (("build_logs", "level"), ("build_events", "type")):
            names = {p.name for p in psycopg_partitions(conn, table)}
            assert len(names) >= 3   # initial, default and the windows of now and ahead
            build = cuid.cuid()
            for query in (
                f"SELECT * FROM {table} WHERE build_id = %s AND seq > 0 ORDER BY seq LIMIT 10",
                f"SELECT * FROM {table} WHERE build_id = %s AND {column} = 'error' ORDER BY seq DESC LIMIT 10",
            ):
                plan = _plan(conn, query, build)
                touched = {name for name in names if name in plan}
                assert touched == {partitions.window_name(table, window_of(build))}, plan
            # Generic plans (prepared statements) prune at execution time.
            conn.execute(f"PREPARE q_{table} (text) AS SELECT * FROM {table} WHERE build_id = $1")
            conn.execute("SET plan_cache_mode = force_generic_plan")
            plan = "\n".join(row[0] for row in conn.execute(f"EXPLAIN (ANALYZE, COSTS OFF) EXECUTE q_{table} ('{build}')"))
            assert "Subplans Removed" in plan, plan
            conn.execute("RESET plan_cache_mode")


def psycopg_partitions(conn: psycopg.Connection, table: str) -> list[partitions.Partition]:
    rows = conn.execute(partitions.PARTITIONS_SQL, (table,)).fetchall()
    return [partitions.parse_partition(name, expression) for name, expression in rows]


def test_window_bounds_follow_cuid_creation_times():
    now = datetime(2026, 12, 7, 4, 30, 12, tzinfo=UTC)
    start = partitions.window_start(now)
    assert start == datetime(2026, 12, 7, 4, 0, tzinfo=UTC)
    assert partitions.window_name("build_logs", start) == "build_logs_w20261207t040000"
    low, high = partitions.bound(start), partitions.bound(start + timedelta(hours=1))
    made = "c" + partitions.base36(int(now.timestamp() * 1000)) + "0000abcd12345678"
    assert low <= made < high
    assert partitions.time_of_bound(low) == start
    assert partitions.is_partition("build_logs_w20261207t040000") and not partitions.is_partition("builds")


def test_the_hot_paths_reads_touch_one_partition(empty_database):  # noqa: F811
    from server.store import feeds

    migrate.upgrade(empty_database)
    build = cuid.cuid()
    with psycopg.connect(empty_database, autocommit=True) as conn:
        for kind, values in ((feeds.LOGS, ()), (feeds.LOGS, ("error", "warn")), (feeds.EVENTS, ("step",))):
            names = {p.name for p in psycopg_partitions(conn, kind.table)}
            for upto in (None, 100):
                sql, params = feeds.Read(kind, build, 0, limit=500, max_bytes=1 << 20, upto=upto,
                                         values=values).statement()
                plan = "\n".join(row[0] for row in conn.execute("EXPLAIN (COSTS OFF) " + sql, params))
                touched = {name for name in names if name in plan}
                assert touched == {partitions.window_name(kind.table, window_of(build))}, plan
