"""The janitor's statements (server.archive.janitor): expiry, the archive
garbage queue and the windows of the hot tables.

Each runs on the janitor's own autocommit connection. Every claim is a
`FOR UPDATE SKIP LOCKED` (or an advisory lock), so any number of processes
may run the janitor and each piece of work is done once. Nothing here
deletes rows of build_logs or build_events: their space comes back when a
window is dropped whole.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql

from server.store import partitions

Connection = psycopg.AsyncConnection[Any]

FINISHED = ("COMPLETED", "FAILED", "CANCELLED")

# Deleted builds' prefixes wait this long (the trigger of migration 0005 uses
# the same); a hot build's prefix queued at expiry too, as an archiving
# attempt may have been uploading it.
GARBAGE_DELAY = timedelta(hours=1)

# One process's janitor does the partition work at a time (a session lock).
PARTITIONS_LOCK = 0x6270_6A61_6E69_7472  # "bpjanitr"

EXPIRE = """
WITH due AS (
    SELECT b.id, b.archive_state
    FROM builds AS b JOIN projects AS p ON p.id = b.project_id
    WHERE b.status IN ('COMPLETED', 'FAILED', 'CANCELLED')
      AND b.archive_state <> 'expired'
      AND b.finish_time <= now() - make_interval(days => %(shortest)s)
      AND b.finish_time <= now() - make_interval(days => coalesce(p.log_retention_days, %(default)s))
      AND NOT EXISTS (SELECT 1 FROM archive_claims AS c WHERE c.build_id = b.id AND c.lease_until > now())
    ORDER BY b.finish_time
    LIMIT %(batch)s
    FOR UPDATE OF b SKIP LOCKED
), chunks AS (
    DELETE FROM archive_chunks AS c USING due WHERE c.build_id = due.id
), queued AS (
    INSERT INTO archive_garbage (prefix, build_id, queue_time, not_before)
    SELECT 'builds/' || due.id || '/', due.id, now(),
           CASE WHEN due.archive_state = 'archived' THEN now() ELSE now() + %(delay)s END
    FROM due
    ON CONFLICT (prefix) DO UPDATE SET not_before = least(archive_garbage.not_before, excluded.not_before)
)
UPDATE builds AS b SET archive_state = 'expired', expire_time = now()
FROM due WHERE b.id = due.id
RETURNING b.id, due.archive_state
"""

CLAIM_GARBAGE = """
UPDATE archive_garbage SET not_before = now() + %(lease)s
WHERE prefix IN (
    SELECT prefix FROM archive_garbage
    WHERE not_before <= now()
      -- An archived build's prefix queued at its expiry (not_before = queue_time)
      -- goes at once: no attempt archives an archived build. Any other waits
      -- an archiving attempt's lease too.
      AND (queue_time <= now() - %(age)s OR not_before = queue_time)
    ORDER BY not_before LIMIT %(batch)s FOR UPDATE SKIP LOCKED
)
RETURNING prefix, build_id
"""

# Whether a window may go: every build whose id falls in it is finished and
# out of the hot tier (archived or expired) since `grace` at least. Deleted
# builds are not there to object. Index range scan on builds' primary key.
WINDOW_BUSY = """
SELECT EXISTS (
    SELECT 1 FROM builds
    WHERE id >= %(lower)s AND id < %(upper)s
      AND (status NOT IN ('COMPLETED', 'FAILED', 'CANCELLED') OR archive_state = 'hot'
           OR coalesce(expire_time, archive_time) > now() - %(grace)s)
)
"""

# Window tables no longer attached (a janitor stopped between DETACH and DROP).
DETACHED = """
SELECT c.relname FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
WHERE n.nspname = current_schema() AND c.relkind = 'r' AND c.relname ~ '^(build_logs|build_events)_w[0-9]{8}t[0-9]{6}$'
  AND NOT c.relispartition
"""

# A DETACH ... CONCURRENTLY interrupted half way leaves the partition pending.
PENDING = """
SELECT c.relname FROM pg_inherits AS i JOIN pg_class AS c ON c.oid = i.inhrelid
JOIN pg_class AS p ON p.oid = i.inhparent
WHERE p.relname = %s AND i.inhdetachpending
"""


@dataclass(frozen=True, slots=True)
class Expired:
    build_id: str
    was: str   # 'hot' or 'archived'


async def expire_due(conn: Connection, *, default_days: int, batch: int) -> list[Expired]:
    """Mark up to `batch` builds whose retention passed as 'expired' (their
    chunk index rows deleted and their prefix queued as garbage), in one
    transaction; the build rows, statuses and timings stay."""
    shortest = await _shortest_retention(conn, default_days)
    async with conn.transaction():
        cursor = await conn.execute(
            EXPIRE, {"shortest": shortest, "default": default_days, "batch": batch, "delay": GARBAGE_DELAY}
        )
        return [Expired(build_id, was) for build_id, was in await cursor.fetchall()]


async def _shortest_retention(conn: Connection, default_days: int) -> int:
    """The shortest retention of any project: builds finished more recently
    cannot be due, so the scan of the finished builds starts there."""
    cursor = await conn.execute("SELECT min(log_retention_days) FROM projects")
    row = await cursor.fetchone()
    least = row[0] if row is not None else None
    return default_days if least is None else min(int(least), default_days)


async def claim_garbage(
    conn: Connection, *, batch: int, lease: timedelta, age: timedelta
) -> list[tuple[str, str]]:
    """Up to `batch` queued prefixes whose time came (not_before passed, and
    queued `age` ago at least), each leased for `lease` to this janitor (a
    janitor that dies lets another take it after)."""
    cursor = await conn.execute(CLAIM_GARBAGE, {"batch": batch, "lease": lease, "age": age})
    return [(prefix, build_id) for prefix, build_id in await cursor.fetchall()]


async def garbage_done(conn: Connection, prefix: str) -> None:
    await conn.execute("DELETE FROM archive_garbage WHERE prefix = %s", (prefix,))


async def try_partition_lock(conn: Connection) -> bool:
    cursor = await conn.execute("SELECT pg_try_advisory_lock(%s)", (PARTITIONS_LOCK,))
    row = await cursor.fetchone()
    return bool(row and row[0])


async def partition_unlock(conn: Connection) -> None:
    await conn.execute("SELECT pg_advisory_unlock(%s)", (PARTITIONS_LOCK,))


async def create_windows(conn: Connection, now: datetime, *, seconds: int, ahead: int, lock_timeout: float) -> list[str]:
    """Create the window holding `now` and `ahead` after it, for both tables,
    where missing; returns the names created."""
    created = []
    for table in partitions.TABLES:
        have = {p.name for p in await partitions.partitions(conn, table)}
        for start in partitions.windows_ahead(now, seconds, ahead):
            name = partitions.window_name(table, start)
            if name in have:
                continue
            await _set_lock_timeout(conn, lock_timeout)
            await conn.execute(partitions.create_window_sql(table, start, seconds))
            created.append(name)
    return created


async def droppable(conn: Connection, now: datetime, *, grace: timedelta) -> list[tuple[str, str]]:
    """(table, partition) of every window (or the initial partition) that
    ended more than `grace` ago and whose builds are all out of the hot tier
    for `grace`: nothing can read or write it any more."""
    found = []
    for table in partitions.TABLES:
        for part in await partitions.partitions(conn, table):
            if part.default or part.upper is None:
                continue
            end = part.end
            if end is None or end > now - grace:
                continue
            lower = part.lower or ""
            cursor = await conn.execute(WINDOW_BUSY, {"lower": lower, "upper": part.upper, "grace": grace})
            row = await cursor.fetchone()
            if row is not None and not row[0]:
                found.append((table, part.name))
    return found


async def drop_partition(conn: Connection, table: str, name: str, *, lock_timeout: float) -> None:
    """DETACH (CONCURRENTLY when the table allows it) then DROP, outside any
    transaction block, each under `lock_timeout`: a statement that would
    wait longer for its lock gives up (LockNotAvailable) and the next round
    tries again, so readers and appenders are never held up for long."""
    await _set_lock_timeout(conn, lock_timeout)
    parent, part = sql.Identifier(table), sql.Identifier(name)
    if await _has_default(conn, table):
        # CONCURRENTLY is refused when the table has a DEFAULT partition: a
        # plain DETACH takes the parent's lock for an instant instead.
        await conn.execute(sql.SQL("ALTER TABLE {} DETACH PARTITION {}").format(parent, part))
    else:
        await conn.execute(sql.SQL("ALTER TABLE {} DETACH PARTITION {} CONCURRENTLY").format(parent, part))
    await conn.execute(sql.SQL("DROP TABLE {}").format(part))


async def finish_interrupted(conn: Connection, *, lock_timeout: float) -> list[str]:
    """Complete what a janitor stopped half way did: FINALIZE a pending
    concurrent detach, and drop detached window tables."""
    done = []
    for table in partitions.TABLES:
        cursor = await conn.execute(PENDING, (table,))
        for (name,) in await cursor.fetchall():
            await _set_lock_timeout(conn, lock_timeout)
            await conn.execute(sql.SQL("ALTER TABLE {} DETACH PARTITION {} FINALIZE").format(
                sql.Identifier(table), sql.Identifier(name)))
    cursor = await conn.execute(DETACHED)
    for (name,) in await cursor.fetchall():
        await _set_lock_timeout(conn, lock_timeout)
        await conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(name)))
        done.append(name)
    return done


async def _has_default(conn: Connection, table: str) -> bool:
    return any(p.default for p in await partitions.partitions(conn, table))


async def _set_lock_timeout(conn: Connection, seconds: float) -> None:
    await conn.execute(sql.SQL("SET lock_timeout = {}").format(sql.Literal(f"{max(1, int(seconds * 1000))}ms")))
