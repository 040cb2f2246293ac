"""The archiver: every process (each replica, each worker) runs one; each
finished build is archived once (docs/lifecycle.md#the-archiver).

A round:
1. Claim. One short transaction takes the oldest due build (finished, its
   finish_time older than ARCHIVE_AFTER_SECONDS, archive_state 'hot', no live
   claim) with `SELECT ... FOR NO KEY UPDATE SKIP LOCKED` on its builds row,
   and writes its claim: a fresh attempt id and a lease of
   ARCHIVE_LEASE_SECONDS (archive_claims). The lease is renewed every third of
   it while the attempt works; a process that dies stops renewing, and once
   the lease is over another process claims the build again.
2. Clean up. Objects under `builds/<id>/` of any other attempt are leftovers
   of attempts that never committed (the claim is ours, so their leases are
   over): deleted.
3. Upload. For logs, then events: the hot rows are read in seq order in
   batches bounded in rows and bytes, each converted to an Entry by the same
   converter the hot path uses (server.core.feeds_wire.log_entry /
   event_entry), so the archived bytes are the hot ones; the chunk encoder
   (server.archive.chunks) makes zstd frames which are streamed to the object
   `builds/<id>/<kind>s-<attempt>.bpc` (server.archive.objects: multipart,
   never the whole log in memory).
4. Index. One transaction: lock the builds row, check the claim is still ours
   and the build still hot, with exactly the lines and events uploaded;
   insert the archive_chunks rows, set archive_state 'archived' and
   archive_time, delete the claim. Hot rows stay until their partition is
   dropped (retention); readers stop reading them once the state has changed.

Failures: an attempt that fails (store or database unreachable, a build whose
rows do not match its counters) deletes its objects (best effort), counts the
failure on its claim and keeps the claim for a back-off that doubles with each
failure, so one bad build never holds up the others. An attempt that lost its
claim (its lease ran out and another process took the build) or whose build
was deleted gives up and deletes its objects.

Tests stop a server process at a named step (ARCHIVE_TEST_PAUSE_AT, read by
server.app only) and SIGKILL it there: tests/e2e/test_archive_crash.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from psycopg.rows import dict_row

from server.archive.chunks import ChunkMeta, Encoder
from server.archive.objects import ObjectStore, attempt_of, build_prefix, new_attempt, object_key
from server.live.records import Entry, event_entry, log_entry
from server.store.db import Database
from server.store.feeds import EVENTS, LOGS, TERMINAL_SQL, Kind

if TYPE_CHECKING:
    from server.telemetry.metrics import Metrics

log = logging.getLogger(__name__)

# The steps a test may stop a process at (ARCHIVE_TEST_PAUSE_AT).
PAUSE_STEPS = ("before-upload", "after-upload", "after-index")

# A batch of hot rows read at once: at most this many rows, and rows past this
# many wire bytes are left to the next batch (the first row always comes).
BATCH_ROWS = 2000
BATCH_BYTES = 4 * 1024 * 1024
# The back-off after a failed attempt: max(interval, lease) * 2^failures, at most this.
MAX_BACKOFF_SECONDS = 3600.0
# Bounds of one call to the store.
LIST_TIMEOUT = 30.0
DELETE_TIMEOUT = 30.0
# One object's upload: generous, since it streams a whole log; the lease is
# renewed meanwhile.
UPLOAD_TIMEOUT = 3600.0

CONVERTERS: dict[str, Callable[[dict[str, Any]], Entry]] = {"log": log_entry, "event": event_entry}
KINDS: tuple[Kind, ...] = (LOGS, EVENTS)

CLAIM = f"""
WITH due AS (
    SELECT b.id FROM builds AS b
    WHERE b.archive_state = 'hot' AND b.status IN ({TERMINAL_SQL})
      AND b.finish_time < now() - make_interval(secs => %(after)s)
      AND NOT EXISTS (SELECT 1 FROM archive_claims AS c WHERE c.build_id = b.id AND c.lease_until > now())
    ORDER BY b.finish_time
    LIMIT 1
    FOR NO KEY UPDATE OF b SKIP LOCKED
)
INSERT INTO archive_claims AS c (build_id, attempt, claim_time, lease_until)
SELECT id, %(attempt)s, now(), now() + make_interval(secs => %(lease)s) FROM due
ON CONFLICT (build_id) DO UPDATE
    SET attempt = excluded.attempt, claim_time = excluded.claim_time, lease_until = excluded.lease_until
    WHERE c.lease_until <= now()
RETURNING c.build_id, c.failures
"""

RENEW = (
    "UPDATE archive_claims SET lease_until = now() + make_interval(secs => %(lease)s) "
    "WHERE build_id = %(id)s AND attempt = %(attempt)s RETURNING 1"
)

# The oldest due build's wait past ARCHIVE_AFTER_SECONDS (0 when none).
LAG = (
    "SELECT coalesce(extract(epoch FROM now() - min(finish_time)) - %(after)s, 0)::float8 FROM builds "
    f"WHERE archive_state = 'hot' AND status IN ({TERMINAL_SQL}) "
    "AND finish_time < now() - make_interval(secs => %(after)s)"
)

CHUNK_COLUMNS = tuple(ChunkMeta.__dataclass_fields__)
INSERT_CHUNK = (
    f"INSERT INTO archive_chunks ({', '.join(CHUNK_COLUMNS)}) "
    f"VALUES ({', '.join(f'%({name})s' for name in CHUNK_COLUMNS)})"
)


def _batch(kind: Kind) -> str:
    """Hot rows of one build after a seq, in seq order: at most BATCH_ROWS,
    cut where their wire bytes pass BATCH_BYTES (the first row always)."""
    return (
        "SELECT * FROM (SELECT *, sum(wire_bytes) OVER (ORDER BY seq) - wire_bytes AS bytes_before "
        f"FROM (SELECT * FROM {kind.table} WHERE build_id = %(id)s AND seq > %(after)s "
        f"ORDER BY seq LIMIT {BATCH_ROWS}) AS r) AS w "
        f"WHERE bytes_before < {BATCH_BYTES} ORDER BY seq"
    )


class LostClaim(Exception):
    """The attempt's claim is no longer its own: the lease ran out and another
    process claimed the build, or the build was deleted."""


class BuildGone(LostClaim):
    """The build was deleted while it was being archived."""


class Mismatch(Exception):
    """The hot rows are not what the build's counters say (a gap, or rows
    added after it finished): archiving it would lose or invent lines."""


@dataclass
class Outcome:
    """One archived build, for the metrics and the log line."""

    build_id: str
    chunks: list[ChunkMeta] = field(default_factory=list)
    objects: dict[str, int] = field(default_factory=dict)   # kind -> stored bytes


class Archiver:
    """The job. `start()` runs it in the background until `stop()`."""

    def __init__(
        self, db: Database, store: ObjectStore, *, after_seconds: float, interval_seconds: float,
        lease_seconds: float, metrics: Metrics | None = None, pause_at: str = "",
        serving: Callable[[], bool] = lambda: True, cpu_share: float = 1.0,
    ) -> None:
        if pause_at and pause_at not in PAUSE_STEPS:
            raise ValueError(f"ARCHIVE_TEST_PAUSE_AT={pause_at!r} is not one of {', '.join(PAUSE_STEPS)}")
        self.db = db
        self.store = store
        self.after = after_seconds
        self.interval = interval_seconds
        self.lease = lease_seconds
        # ARCHIVE_CPU_SHARE: converting and compressing run on the event loop
        # that serves the calls, so after each batch the job rests for
        # (1 - share) / share times the CPU the batch took.
        self.rest = (1 - cpu_share) / cpu_share
        self.metrics = metrics
        self.pause_at = pause_at
        # False while the process does not serve (the database down, the
        # schema not checked yet, shutting down): the job waits.
        self.serving = serving
        self._task: asyncio.Task[None] | None = None
        self._failing = False   # the last round failed: log the next failure at debug level

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="archiver")

    async def stop(self) -> None:
        """Stop at once: an attempt cut short commits nothing, and its objects
        are removed by the build's next attempt."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            if not self.serving():
                await asyncio.sleep(self.interval)
                continue
            try:
                archived = await self.run_once()
                self._failing = False
            except asyncio.CancelledError:
                raise
            except Exception as error:   # a job must outlive any one failure
                self._count_failure("round")
                (log.debug if self._failing else log.warning)(
                    "archiver: could not look for builds to archive (%s); trying again in %gs",
                    _describe(error), self.interval)
                self._failing = True
                archived = False
            if not archived:
                await asyncio.sleep(self.interval * random.uniform(0.9, 1.1))

    async def run_once(self) -> bool:
        """Claim and archive one due build; False when there is none."""
        await self._sample_lag()
        attempt = new_attempt()
        claimed = await self._claim(attempt)
        if claimed is None:
            return False
        build_id, failures = claimed
        await self._archive(build_id, attempt, failures)
        await self._sample_lag()   # the gauge says where the backlog stands now, not before this build
        return True

    # -- the steps -------------------------------------------------------------------------

    async def _claim(self, attempt: str) -> tuple[str, int] | None:
        async with self.db.connection() as conn, conn.transaction():
            row = await (await conn.execute(
                CLAIM, {"after": self.after, "attempt": attempt, "lease": self.lease})).fetchone()
        return None if row is None else (str(row[0]), int(row[1]))

    async def _archive(self, build_id: str, attempt: str, failures: int) -> None:
        lost = asyncio.Event()
        renewer = asyncio.create_task(self._renew(build_id, attempt, lost), name=f"archive-lease-{build_id}")
        keys = [object_key(build_id, kind.name, attempt) for kind in KINDS]   # type: ignore[arg-type]
        began = time.monotonic()
        try:
            await self._clean_up(build_id, attempt)
            await self._pause("before-upload", build_id)
            outcome = Outcome(build_id)
            for kind in KINDS:
                await self._upload(build_id, kind, attempt, outcome, lost)
            await self._pause("after-upload", build_id)
            await self._commit(build_id, attempt, outcome)
        except asyncio.CancelledError:
            raise
        except LostClaim as error:
            if isinstance(error, BuildGone) or not await self._exists(build_id):
                log.info("archiver: build %s was deleted while being archived; its objects are removed", build_id)
                await self._remove(keys)
                self._count_failure("build_deleted")
                return
            log.warning("archiver: lost the claim on build %s (its lease of %gs ran out and another process "
                        "took it); this attempt's objects are removed", build_id, self.lease)
            await self._remove(keys)
            self._count_failure("lost_claim")
            return
        except Exception as error:   # one build's failure must not stop the job
            await self._remove(keys)
            await self._failed(build_id, attempt, failures, error)
            return
        finally:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer
        seconds = time.monotonic() - began
        self._count_success(outcome)
        log.info(
            "archiver: archived build %s: %d chunk(s), %d bytes stored, in %.2fs",
            build_id, len(outcome.chunks), sum(outcome.objects.values()), seconds,
            extra={"build_id": build_id, "chunks": len(outcome.chunks), "seconds": round(seconds, 3)},
        )
        await self._pause("after-index", build_id)
        # Objects an attempt that lost its claim finished writing after the
        # clean-up above (a process that stalled past its lease, then died).
        with contextlib.suppress(Exception):
            await self._clean_up(build_id, attempt)

    async def _renew(self, build_id: str, attempt: str, lost: asyncio.Event) -> None:
        """Renew the lease every third of it until cancelled; `lost` when the
        claim is no longer ours."""
        while True:
            await asyncio.sleep(self.lease / 3)
            try:
                async with self.db.connection() as conn:
                    row = await (await conn.execute(
                        RENEW, {"id": build_id, "attempt": attempt, "lease": self.lease})).fetchone()
            except asyncio.CancelledError:
                raise
            except Exception as error:   # the commit checks the claim anyway
                log.warning("archiver: could not renew the lease on build %s (%s)", build_id, _describe(error))
                continue
            if row is None:
                lost.set()
                return

    async def _clean_up(self, build_id: str, attempt: str) -> None:
        """Delete the objects of the build's other attempts (none committed:
        the build is hot, or its committed attempt is this one)."""
        found = await self.store.list(build_prefix(build_id), timeout=LIST_TIMEOUT)
        stale = [item.key for item in found if attempt_of(item.key) != attempt]
        if stale:
            log.info("archiver: removing %d object(s) of attempts on build %s that never committed",
                     len(stale), build_id)
            await self.store.delete(stale, timeout=DELETE_TIMEOUT)

    async def _upload(self, build_id: str, kind: Kind, attempt: str, outcome: Outcome, lost: asyncio.Event) -> None:
        key = object_key(build_id, kind.name, attempt)   # type: ignore[arg-type]
        encoder = Encoder(build_id, kind.name, key)
        chunks: list[ChunkMeta] = []
        convert = CONVERTERS[kind.name]

        async def frames() -> AsyncIterator[bytes]:
            after = 0
            while True:
                if lost.is_set():
                    raise LostClaim(build_id)
                async with self.db.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
                    await cur.execute(_batch(kind), {"id": build_id, "after": after})
                    rows = await cur.fetchall()
                if not rows:
                    break
                began = time.thread_time()
                for row in rows:
                    done = encoder.add(convert(row))
                    if done is not None:
                        chunks.append(done[1])
                        yield done[0]
                after = rows[-1]["seq"]
                if self.rest:
                    await asyncio.sleep((time.thread_time() - began) * self.rest)
            done = encoder.finish()
            if done is not None:
                chunks.append(done[1])
                yield done[0]

        # An empty feed has no object: the first frame decides.
        stream = frames()
        first = await anext(stream, None)
        if first is None:
            return

        async def everything() -> AsyncIterator[bytes]:
            assert first is not None
            yield first
            async for frame in stream:
                yield frame

        try:
            stored = await self.store.put(key, everything(), timeout=UPLOAD_TIMEOUT)
        except Exception:
            # The store's client may wrap what the frames raised.
            if lost.is_set():
                raise LostClaim(build_id) from None
            raise
        outcome.chunks.extend(chunks)
        outcome.objects[kind.name] = stored

    async def _commit(self, build_id: str, attempt: str, outcome: Outcome) -> None:
        counts = {kind.name: 0 for kind in KINDS}
        lasts = dict(counts)
        for meta in outcome.chunks:
            counts[meta.kind] += meta.count
            lasts[meta.kind] = max(lasts[meta.kind], meta.last_seq)
        async with self.db.connection() as conn, conn.transaction():
            build = await (await conn.execute(
                "SELECT archive_state, last_log_seq, last_event_seq FROM builds WHERE id = %s FOR NO KEY UPDATE",
                (build_id,))).fetchone()
            if build is None:
                raise BuildGone(build_id)
            claim = await (await conn.execute(
                "SELECT attempt FROM archive_claims WHERE build_id = %s FOR UPDATE", (build_id,))).fetchone()
            if claim is None or claim[0] != attempt or build[0] != "hot":
                raise LostClaim(build_id)
            for kind, counter in (("log", build[1]), ("event", build[2])):
                if counts[kind] != counter or lasts[kind] != counter:
                    raise Mismatch(
                        f"build {build_id} has {counts[kind]} hot {kind}s up to sequence {lasts[kind]} but its "
                        f"counter says {counter}"
                    )
            async with conn.cursor() as cur:
                await cur.executemany(INSERT_CHUNK, [meta.row() for meta in outcome.chunks])
            await conn.execute(
                "UPDATE builds SET archive_state = 'archived', archive_time = now() WHERE id = %s", (build_id,))
            await conn.execute("DELETE FROM archive_claims WHERE build_id = %s", (build_id,))

    async def _failed(self, build_id: str, attempt: str, failures: int, error: Exception) -> None:
        """Count the failure on the claim and hold the build back for a while."""
        backoff = min(max(self.interval, self.lease) * 2 ** min(failures, 16), MAX_BACKOFF_SECONDS)
        self._count_failure("mismatch" if isinstance(error, Mismatch) else "error")
        log.warning(
            "archiver: could not archive build %s (%s); it stays in PostgreSQL and is tried again in %gs "
            "(failure %d)", build_id, _describe(error), backoff, failures + 1,
            extra={"build_id": build_id},
        )
        with contextlib.suppress(Exception):
            async with self.db.connection() as conn:
                await conn.execute(
                    "UPDATE archive_claims SET failures = failures + 1, "
                    "lease_until = now() + make_interval(secs => %(backoff)s) "
                    "WHERE build_id = %(id)s AND attempt = %(attempt)s",
                    {"backoff": backoff, "id": build_id, "attempt": attempt},
                )

    async def _exists(self, build_id: str) -> bool:
        try:
            async with self.db.connection() as conn:
                return await (await conn.execute("SELECT 1 FROM builds WHERE id = %s", (build_id,))).fetchone() is not None
        except Exception:   # unknown: say it was not deleted
            return True

    async def _remove(self, keys: list[str]) -> None:
        """Best effort: what is left is removed by the build's next attempt,
        or with the build (retention)."""
        try:
            await self.store.delete(keys, timeout=DELETE_TIMEOUT)
        except Exception as error:
            log.warning("archiver: could not remove %s (%s); the next attempt will", keys, _describe(error))

    async def _pause(self, step: str, build_id: str) -> None:
        """Tests only: stop here (the test SIGKILLs the process)."""
        if self.pause_at != step:
            return
        log.warning("archiver: test pause at %s of build %s", step, build_id,
                    extra={"archive_pause": step, "build_id": build_id})
        await asyncio.Event().wait()

    # -- metrics ---------------------------------------------------------------------------

    async def _sample_lag(self) -> None:
        if self.metrics is None:
            return
        async with self.db.connection() as conn:
            row = await (await conn.execute(LAG, {"after": self.after})).fetchone()
        self.metrics.archive_lag.set(max(0.0, float(row[0])) if row is not None else 0.0)

    def _count_success(self, outcome: Outcome) -> None:
        if self.metrics is None:
            return
        self.metrics.archive_builds.inc()
        for kind, stored in outcome.objects.items():
            self.metrics.archive_objects.labels(kind).inc()
            self.metrics.archive_bytes.labels(kind, "stored").inc(stored)
        for meta in outcome.chunks:
            self.metrics.archive_bytes.labels(meta.kind, "raw").inc(meta.raw_bytes)

    def _count_failure(self, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.archive_failures.labels(reason).inc()


def _describe(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0][:300] if text else type(error).__name__
