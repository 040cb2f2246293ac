"""The janitor: retention, archive garbage and the windows of the hot tables
(docs/lifecycle.md#retention).

Every process runs one (every replica, every worker), every JANITOR_SECONDS,
on a database connection of its own. Each round:

1. Expiry. Finished builds whose finish_time + their project's
   log_retention_days (or LOG_RETENTION_DAYS) has passed become 'expired'
   (expire_time = now): their chunk index rows are deleted and their object
   prefix `builds/<id>/` is queued as garbage, in one transaction. Their hot
   rows are not deleted (never a bulk DELETE on the hot tables): no read
   looks at them any more, and their space comes back with their window.
   The build row, its status and timings stay.
2. Garbage. Every queued prefix whose time came (deleted builds' prefixes,
   queued by a trigger on builds, wait an hour so an archiving attempt that
   was uploading ends first) is listed in the store and every object under
   it deleted; then its queue row goes.
3. Windows. The windows of build_logs and build_events are created ahead of
   time, and a window (or the initial partition a migrated database
   started with) is detached and dropped once every build in it is out of
   the hot tier (archived, expired or deleted) for HOT_PARTITION_GRACE_SECONDS.

Claims are `FOR UPDATE SKIP LOCKED` (expiry), leases (garbage) and a session
advisory lock (windows), so each piece of work is done once however many
processes run the janitor. A failure (the database or the store away) is
logged and the next round tries again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import psycopg

from server.domain.errors import Unavailable
from server.store import db as store_db
from server.store import retention
from server.store.db import DatabaseRejected, DatabaseUnavailable
from server.telemetry.metrics import Metrics

log = logging.getLogger(__name__)

BATCH = 500                  # builds expired, or prefixes drained, per statement
STORE_TIMEOUT = 30.0         # seconds for one list or delete call to the store
GARBAGE_LEASE = timedelta(minutes=5)
WINDOWS_AHEAD = 3
LOCK_TIMEOUT = 2.0           # seconds a DDL statement may wait for its lock
STATEMENT_TIMEOUT = "60s"


class StoreRefused(Exception):
    """The store took a delete but still lists what it deleted."""


class ObjectInfo(Protocol):
    @property
    def key(self) -> str: ...


class Store(Protocol):
    """What the janitor needs of server.archive.objects.ObjectStore."""

    where: str

    async def list(self, prefix: str, *, timeout: float, limit: int = ...) -> Sequence[Any]: ...

    async def delete(self, keys: Sequence[str], *, timeout: float) -> None: ...


@dataclass
class Round:
    """What one round did (logged, and read by the tests through the log)."""

    expired: int = 0
    prefixes: int = 0
    objects: int = 0
    created: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.expired or self.prefixes or self.objects or self.created or self.dropped)


@dataclass
class Janitor:
    database_url: str
    store: Store | None              # None: archiving is off; the garbage queue waits for a store
    default_days: int
    interval: float
    window_seconds: int
    grace: timedelta
    timeout: float = 5.0             # connecting
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    # A deleted build's prefix is listed once it was queued this long ago at
    # least (and its not_before, an hour, passed): an archiving attempt's
    # lease (ARCHIVE_LEASE_SECONDS), so no attempt is still uploading.
    garbage_age: timedelta = timedelta(minutes=1)
    metrics: Metrics | None = None
    _conn: psycopg.AsyncConnection[Any] | None = field(default=None, repr=False)
    _task: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def started(self) -> bool:
        return self._task is not None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="janitor")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    async def _run(self) -> None:
        while True:
            try:
                done = await self.round()
                if done:
                    log.info(
                        "janitor: expired %d build(s); emptied %d prefix(es), %d object(s); "
                        "windows created %s, dropped %s",
                        done.expired, done.prefixes, done.objects, done.created or "none", done.dropped or "none",
                    )
            except (DatabaseUnavailable, DatabaseRejected, psycopg.OperationalError) as error:
                log.warning("janitor: the database is unavailable (%s); trying again in %gs", error, self.interval)
                await self._reset()
            except psycopg.Error as error:
                log.warning("janitor: %s; trying again in %gs", str(error).strip().splitlines()[0], self.interval)
                await self._reset()
            await asyncio.sleep(self.interval)

    async def _reset(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close()
        self._conn = None

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = await store_db.connect(self.database_url, timeout=self.timeout, name="buildplatform-janitor")
            await self._conn.execute(f"SET statement_timeout = '{STATEMENT_TIMEOUT}'")
        return self._conn

    async def round(self) -> Round:
        """One round: expiry, garbage, windows."""
        conn = await self._connection()
        done = Round()
        while batch := await retention.expire_due(conn, default_days=self.default_days, batch=BATCH):
            done.expired += len(batch)
            if len(batch) < BATCH:
                break
        if self.store is not None:
            await self._drain(conn, self.store, done)
        await self._windows(conn, done)
        if self.metrics is not None:
            self.metrics.logs_expired.inc(done.expired)
            self.metrics.archive_objects_deleted.inc(done.objects)
            self.metrics.hot_partitions_dropped.inc(len(done.dropped))
        return done

    async def _drain(self, conn: psycopg.AsyncConnection[Any], store: Store, done: Round) -> None:
        while claimed := await retention.claim_garbage(
                conn, batch=BATCH, lease=GARBAGE_LEASE, age=self.garbage_age):
            for prefix, build_id in claimed:
                try:
                    previous: set[str] = set()
                    while found := await store.list(prefix, timeout=STORE_TIMEOUT):
                        keys = [info.key for info in found]
                        if set(keys) == previous:
                            # Deleted, yet listed again: leave it to a later round.
                            raise StoreRefused(f"{len(keys)} object(s) under {prefix!r} are still listed after "
                                               "their deletion")
                        await store.delete(keys, timeout=STORE_TIMEOUT)
                        done.objects += len(keys)
                        previous = set(keys)
                except (Unavailable, StoreRefused) as error:
                    # Its lease runs out and a later round (of any process) retries.
                    log.warning("janitor: the objects of build %s stay for now: %s", build_id, error)
                    return
                await retention.garbage_done(conn, prefix)
                done.prefixes += 1
            if len(claimed) < BATCH:
                return

    async def _windows(self, conn: psycopg.AsyncConnection[Any], done: Round) -> None:
        if not await retention.try_partition_lock(conn):
            return   # another process's janitor does it now
        try:
            now = self.clock()
            done.dropped += await retention.finish_interrupted(conn, lock_timeout=LOCK_TIMEOUT)
            try:
                done.created += await retention.create_windows(
                    conn, now, seconds=self.window_seconds, ahead=WINDOWS_AHEAD, lock_timeout=LOCK_TIMEOUT)
            except psycopg.errors.LockNotAvailable:
                log.info("janitor: creating the next windows waits for a busy table; next round")
            for table, name in await retention.droppable(conn, now, grace=self.grace):
                try:
                    await retention.drop_partition(conn, table, name, lock_timeout=LOCK_TIMEOUT)
                except psycopg.errors.LockNotAvailable:
                    log.info("janitor: dropping %s waits for a busy table; next round", name)
                    continue
                done.dropped.append(name)
        finally:
            await conn.execute("RESET lock_timeout")
            await retention.partition_unlock(conn)
