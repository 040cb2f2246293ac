"""The archiver in-process, on a real database and a real local store: what
an attempt does when its build is deleted under it, when it loses its claim,
when the hot rows do not match the counters, and that the archived records
are byte for byte the hot path's."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import cuid
import psycopg
import pytest
from psycopg.rows import dict_row

from server import migrate
from server.archive.chunks import ChunkMeta, decode
from server.archive.job import Archiver
from server.archive.objects import ObjectStore, open_store
from server.live.records import event_entry, log_entry
from server.store.db import Database
from server.telemetry.metrics import Metrics
from tests.support import create_database, drop_database

Hook = Callable[[str], Awaitable[None]]


@pytest.fixture
def url(postgres: str) -> Iterator[str]:
    url = create_database(postgres, prefix="bp_archive_job")
    migrate.upgrade(url)
    yield url
    drop_database(postgres, url)


class Stepped(Archiver):
    """The archiver with a test's action at one step (where a process under
    ARCHIVE_TEST_PAUSE_AT would stop)."""

    def __init__(self, *args: Any, at: str = "", action: Hook | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.at, self.action = at, action

    async def _pause(self, step: str, build_id: str) -> None:
        if step == self.at and self.action is not None:
            await self.action(build_id)


def seed(url: str, lines: int = 50, events: int = 5, *, status: str = "COMPLETED") -> str:
    build = cuid.cuid()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO users (id, clerk_id, email, create_time, update_time) "
                     "VALUES (%s, %s, 'a@b', now(), now()) ON CONFLICT DO NOTHING", ("u", "k"))
        conn.execute("INSERT INTO projects (id, user_id, name, create_time, update_time) "
                     "VALUES ('p', 'u', 'p', now(), now()) ON CONFLICT DO NOTHING")
        conn.execute(
            "INSERT INTO builds (id, user_id, project_id, status, app_spec, create_time, update_time, finish_time, "
            "last_log_seq, last_event_seq) VALUES (%s, 'u', 'p', %s, '#', now(), now(), now() - interval '1 hour', "
            "%s, %s)", (build, status, lines, events))
        for seq in range(1, lines + 1):
            conn.execute(
                "INSERT INTO build_logs (build_id, seq, level, message, metadata, create_time, wire_bytes) "
                "VALUES (%s, %s, %s, %s, %s, now() + %s * interval '1 ms', 200)",
                (build, seq, "error" if seq % 5 == 0 else "info", f"\x1b[32mline {seq}\x1b[0m é",
                 json.dumps({"n": seq}) if seq % 3 == 0 else None, seq))
        for seq in range(1, events + 1):
            conn.execute(
                "INSERT INTO build_events (build_id, seq, type, data, create_time, wire_bytes) "
                "VALUES (%s, %s, 'step', %s, now(), 200)", (build, seq, json.dumps({"i": seq})))
    return build


def state(url: str, build: str) -> dict[str, Any]:
    with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
        row = conn.execute("SELECT archive_state FROM builds WHERE id = %s", (build,)).fetchone()
        chunks = conn.execute("SELECT * FROM archive_chunks WHERE build_id = %s ORDER BY kind, chunk",
                              (build,)).fetchall()
        claims = conn.execute("SELECT * FROM archive_claims WHERE build_id = %s", (build,)).fetchall()
    return {"state": row and row["archive_state"], "chunks": chunks, "claims": claims}


async def keys(store: ObjectStore) -> set[str]:
    return {item.key for item in await store.list("builds/", timeout=10)}


async def run(url: str, tmp_path: Path, **kwargs: Any) -> tuple[Archiver, ObjectStore, bool]:
    db = Database(url, pool_size=2, max_overflow=0)
    await db.open()
    store = open_store(str(tmp_path / "archive"))
    archiver = Stepped(db, store, after_seconds=0, interval_seconds=0.1, lease_seconds=30, **kwargs)
    try:
        done = await archiver.run_once()
    finally:
        await db.close()
    return archiver, store, done


def test_archived_records_are_the_hot_paths_entries_byte_for_byte(url, tmp_path):
    build = seed(url, lines=300, events=7)
    with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
        hot_logs = [log_entry(row) for row in conn.execute(
            "SELECT * FROM build_logs WHERE build_id = %s ORDER BY seq", (build,))]
        hot_events = [event_entry(row) for row in conn.execute(
            "SELECT * FROM build_events WHERE build_id = %s ORDER BY seq", (build,))]

    async def main() -> None:
        _, store, done = await run(url, tmp_path, metrics=Metrics(registry=None))
        assert done
        after = state(url, build)
        assert after["state"] == "archived" and after["claims"] == []
        for kind, hot in (("log", hot_logs), ("event", hot_events)):
            archived = []
            for row in after["chunks"]:
                if row["kind"] == kind:
                    meta = ChunkMeta.from_row(row)
                    archived += decode(await store.get(meta.object_key, meta.byte_offset, meta.byte_end, timeout=5),
                                       meta)
            assert archived == hot
        log_chunk = next(row for row in after["chunks"] if row["kind"] == "log")
        assert dict(zip(log_chunk["value_names"], log_chunk["value_counts"], strict=True)) == {"info": 240, "error": 60}
        assert await keys(store) == {row["object_key"] for row in after["chunks"]}

    asyncio.run(main())


def test_nothing_due_claims_nothing(url, tmp_path):
    running = seed(url, status="RUNNING")

    async def main() -> None:
        _, store, done = await run(url, tmp_path)
        assert not done
        assert await keys(store) == set()

    asyncio.run(main())
    assert state(url, running) == {"state": "hot", "chunks": [], "claims": []}


def test_a_build_deleted_mid_attempt_gives_up_and_leaves_no_object(url, tmp_path):
    build = seed(url)

    async def delete(build_id: str) -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("DELETE FROM builds WHERE id = %s", (build_id,))

    async def main() -> None:
        archiver, store, done = await run(url, tmp_path, at="after-upload", action=delete,
                                          metrics=Metrics(registry=None))
        assert done
        assert await keys(store) == set()
        assert archiver.metrics is not None
        assert archiver.metrics.archive_failures.labels("build_deleted")._value.get() == 1

    asyncio.run(main())
    assert state(url, build) == {"state": None, "chunks": [], "claims": []}


def test_an_attempt_that_lost_its_claim_commits_nothing_and_removes_its_objects(url, tmp_path):
    build = seed(url)

    async def taken(build_id: str) -> None:
        # Its lease ran out and another process claimed the build.
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("UPDATE archive_claims SET attempt = 'other' WHERE build_id = %s", (build_id,))

    async def main() -> None:
        _, store, done = await run(url, tmp_path, at="after-upload", action=taken)
        assert done
        assert await keys(store) == set()

    asyncio.run(main())
    after = state(url, build)
    assert after["state"] == "hot" and after["chunks"] == []
    assert [claim["attempt"] for claim in after["claims"]] == ["other"]


def test_hot_rows_unlike_the_counters_are_not_archived_and_the_build_backs_off(url, tmp_path):
    build = seed(url)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DELETE FROM build_logs WHERE build_id = %s AND seq = 7", (build,))

    async def main() -> None:
        _, store, done = await run(url, tmp_path)
        assert done
        assert await keys(store) == set()
        # Backed off: the next round finds nothing due.
        _, _, again = await run(url, tmp_path)
        assert not again

    asyncio.run(main())
    after = state(url, build)
    assert after["state"] == "hot" and after["chunks"] == []
    [claim] = after["claims"]
    assert claim["failures"] == 1 and claim["lease_until"] > claim["claim_time"]


def test_a_new_attempt_removes_the_objects_of_one_that_never_committed(url, tmp_path):
    build = seed(url)

    async def main() -> None:
        store = open_store(str(tmp_path / "archive"))
        stale = f"builds/{build}/logs-deadbeef00000000.bpc"
        await store.put(stale, [b"half an attempt"], timeout=5)
        _, store, done = await run(url, tmp_path)
        assert done
        found = await keys(store)
        assert stale not in found and found == {row["object_key"] for row in state(url, build)["chunks"]}

    asyncio.run(main())
