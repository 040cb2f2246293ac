"""Janitors of several processes at once do each piece of work once
(server.archive.janitor: SKIP LOCKED claims, leases, an advisory lock)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest

from server import migrate
from server.archive.janitor import Janitor, Round
from server.archive.objects import object_key, open_store
from server.config import Settings
from tests.support import MotoS3, create_database, drop_database

BUILDS = 1200   # more than two statements' batch (500) each
OWNER = "c" + "0" * 20 + "own1"


@pytest.fixture
def due_database(postgres: str) -> Iterator[str]:
    url = create_database(postgres, prefix="bp_claims")
    migrate.upgrade(url)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO users (id, clerk_id, email, create_time, update_time) "
                     "VALUES (%s, 'owner', 'owner@example.com', now(), now())", (OWNER,))
        conn.execute("INSERT INTO projects (id, user_id, name, create_time, update_time) "
                     "VALUES (%s, %s, 'Due', now(), now())", (OWNER, OWNER))
        conn.execute(
            "INSERT INTO builds (id, user_id, project_id, status, app_spec, create_time, update_time, finish_time) "
            "SELECT 'cz' || lpad(i::text, 23, '0'), %s, %s, 'COMPLETED', '#', now(), now(), "
            "now() - interval '100 days' FROM generate_series(1, %s) AS i",
            (OWNER, OWNER, BUILDS))
    yield url
    drop_database(postgres, url)


def janitor(url: str, store_dir: Path) -> Janitor:
    return Janitor(database_url=url, store=open_store(str(store_dir)), default_days=90, interval=60,
                   window_seconds=3600, grace=timedelta(hours=1))


def test_two_janitors_expire_and_drain_every_build_once(due_database: str, tmp_path: Path):
    store = open_store(str(tmp_path))
    for i in (1, 2, BUILDS):
        build_id = "cz" + str(i).rjust(23, "0")
        asyncio.run(store.put(object_key(build_id, "log", "a1"), [b"x"], timeout=10))

    async def both() -> list[Round]:
        first, second = janitor(due_database, tmp_path), janitor(due_database, tmp_path)
        try:
            return list(await asyncio.gather(first.round(), second.round()))
        finally:
            await first.stop()
            await second.stop()

    rounds = asyncio.run(both())
    assert sum(r.expired for r in rounds) == BUILDS
    with psycopg.connect(due_database, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM builds WHERE archive_state = 'expired'").fetchone() == (BUILDS,)
        # Hot builds' prefixes wait an hour (an attempt may be uploading): pass it.
        assert conn.execute("SELECT count(*) FROM archive_garbage").fetchone() == (BUILDS,)
        conn.execute("UPDATE archive_garbage SET not_before = now(), queue_time = queue_time - interval '1 hour'")

    rounds = asyncio.run(both())
    assert sum(r.expired for r in rounds) == 0
    assert sum(r.prefixes for r in rounds) == BUILDS and sum(r.objects for r in rounds) == 3
    assert list(tmp_path.rglob("*.bpc")) == []
    # The windows are one janitor's work at a time: the other found the lock taken or nothing to do.
    assert sum(len(r.created) for r in rounds) == 0


def test_the_retention_settings_are_checked_at_start():
    for raw in ("0", "3651", "ninety"):
        with pytest.raises(SystemExit, match="LOG_RETENTION_DAYS"):
            Settings.from_env({"LOG_RETENTION_DAYS": raw})
    with pytest.raises(SystemExit, match="HOT_PARTITION_SECONDS"):
        Settings.from_env({"HOT_PARTITION_SECONDS": "59"})
    settings = Settings.from_env({"LOG_RETENTION_DAYS": "3650", "JANITOR_SECONDS": "0"})
    assert (settings.log_retention_days, settings.janitor_seconds) == (3650, 0)
    assert Settings.from_env({}).log_retention_days == 90


def test_a_store_out_of_reach_leaves_the_prefix_queued_for_a_later_round(due_database: str, tmp_path: Path):
    build_id = "cz" + "1".rjust(23, "0")
    with psycopg.connect(due_database, autocommit=True) as conn:
        conn.execute("INSERT INTO archive_garbage (prefix, build_id, queue_time, not_before) "
                     "VALUES (%s, %s, now() - interval '2 hours', now() - interval '1 hour')",
                     (f"builds/{build_id}/", build_id))
    moto = MotoS3()
    bucket = moto.bucket()
    store = open_store(f"s3://{bucket}/bp", config=moto.config, allow_http=True)
    asyncio.run(store.put(object_key(build_id, "log", "a1"), [b"x"], timeout=10))
    moto.stop()   # the store goes away

    async def one_round(store_now: object) -> Round:
        worker = Janitor(database_url=due_database, store=store_now, default_days=3650,  # type: ignore[arg-type]
                         interval=60, window_seconds=3600, grace=timedelta(hours=1))
        try:
            return await worker.round()
        finally:
            await worker.stop()

    done = asyncio.run(one_round(store))
    assert (done.prefixes, done.objects) == (0, 0)
    with psycopg.connect(due_database, autocommit=True) as conn:
        # Still queued, leased for a while (another round, of any process, retries after).
        leased = conn.execute("SELECT not_before > now() + interval '4 minutes' FROM archive_garbage "
                              "WHERE build_id = %s", (build_id,)).fetchall()
        assert leased == [(True,)]
        conn.execute("UPDATE archive_garbage SET not_before = now() WHERE build_id = %s", (build_id,))
    local = open_store(str(tmp_path))
    asyncio.run(local.put(object_key(build_id, "log", "a1"), [b"x"], timeout=10))
    done = asyncio.run(one_round(local))
    assert (done.prefixes, done.objects) == (1, 1)
    assert list(tmp_path.rglob("*.bpc")) == []
