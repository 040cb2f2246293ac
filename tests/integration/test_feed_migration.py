"""Migration 0002 on rows written before it: every row gets a wire size that
bounds its real size in a response, and unfinished builds their last time."""

from __future__ import annotations

import json

import psycopg
from psycopg.rows import dict_row

from server import migrate
from server.live import records as convert
from tests.integration.test_migrations import empty_database  # noqa: F401  (fixture)

BUILD = "c" + "b" * 24
# JSON far smaller than its protobuf Struct (numbers are 9-11 bytes there),
# deep nesting, strings, and an event with data.
METADATA = [
    None,
    {"numbers": [1] * 2000},
    {"deep": json.loads("[" * 20 + "1" + "]" * 20), "flags": [True, False, None] * 300},
    {"text": "é" * 4000, "map": {f"k{i}": i for i in range(500)}},
]


def test_rows_written_before_0002_get_a_wire_size_that_bounds_their_response(empty_database):  # noqa: F811
    migrate.upgrade(empty_database, "0001")
    with psycopg.connect(empty_database, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO users (id, clerk_id, email, create_time, update_time) VALUES ('u', 'k', 'a@b', now(), now())"
        )
        conn.execute("INSERT INTO projects (id, user_id, name, create_time, update_time) VALUES ('p', 'u', 'p', now(), now())")
        conn.execute(
            "INSERT INTO builds (id, user_id, project_id, status, app_spec, create_time, update_time, last_log_seq, "
            "last_event_seq) VALUES (%s, 'u', 'p', 'RUNNING', '#', now(), now(), %s, 1)",
            (BUILD, len(METADATA)),
        )
        for seq, metadata in enumerate(METADATA, start=1):
            conn.execute(
                "INSERT INTO build_logs (build_id, seq, level, message, metadata, create_time) "
                "VALUES (%s, %s, 'info', %s, %s, now() + %s * interval '1 second')",
                (BUILD, seq, "line " * seq, None if metadata is None else json.dumps(metadata), seq),
            )
        conn.execute(
            "INSERT INTO build_events (build_id, seq, type, data, create_time) VALUES (%s, 1, 't', %s, now())",
            (BUILD, json.dumps({"numbers": [0.5] * 3000})),
        )
    migrate.upgrade(empty_database)
    with psycopg.connect(empty_database, autocommit=True) as conn, conn.cursor(row_factory=dict_row) as cur:
        logs = cur.execute("SELECT * FROM build_logs ORDER BY seq").fetchall()
        events = cur.execute("SELECT * FROM build_events").fetchall()
        build = cur.execute("SELECT * FROM builds").fetchone()
    assert len(logs) == len(METADATA)
    for row in logs:
        assert convert.log_to_pb(row).ByteSize() + 4 <= row["wire_bytes"], row["seq"]
    assert convert.event_to_pb(events[0]).ByteSize() + 4 <= events[0]["wire_bytes"]
    assert build is not None and build["last_log_time"] == logs[-1]["create_time"]
