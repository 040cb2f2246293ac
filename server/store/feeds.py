"""Build logs and build events: append-only, per-build sequenced feeds.

One `Kind` describes each feed (table, counter column, NOTIFY channel), so
logs and events share every query.

The append path is three round trips in one transaction:
1. `UPDATE builds SET <counter> = <counter> + n ... RETURNING <counter>,
   pg_notify(...)`: takes the build's row lock, refuses finished builds and
   (when the writer gave first_sequence) a wrong offset, reserves n sequence
   numbers, and queues the notification, which PostgreSQL delivers only if
   and when the transaction commits;
2. `COPY ... FROM STDIN` of the rows (the fastest bulk path, see
   docs/benchmarks.md);
3. COMMIT.
The row lock serialises the appends of one build, so sequence order is
commit order and `seq > cursor` never skips a row; appends to different
builds run in parallel.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row

from server.domain.errors import FailedPrecondition, NotFound
from server.domain.status import TERMINAL, BuildStatus
from server.store.db import Database

TERMINAL_SQL = ", ".join(f"'{status.value}'" for status in sorted(TERMINAL))


@dataclass(frozen=True, slots=True)
class Kind:
    name: str            # "log" / "event", for messages
    table: str
    counter: str         # column of builds holding the last sequence number
    channel: str         # NOTIFY channel
    columns: tuple[str, ...]  # payload columns written by COPY, after build_id and seq
    filter_column: str   # column the stream/list filter applies to (level / type)


LOGS = Kind("log", "build_logs", "last_log_seq", "bp_log", ("level", "message", "metadata"), "level")
EVENTS = Kind("event", "build_events", "last_event_seq", "bp_event", ("type", "data"), "type")


@dataclass(frozen=True, slots=True)
class Appended:
    first: int
    last: int
    already_written: bool


def _same(stored: dict[str, Any], entry: Sequence[Any], kind: Kind) -> bool:
    """Whether a stored row holds the same line as `entry` (JSON compared as values)."""
    for column, value in zip(kind.columns, entry, strict=True):
        if column in ("metadata", "data"):
            if stored[column] != (json.loads(value) if value is not None else None):
                return False
        elif stored[column] != value:
            return False
    return True


async def append(
    db: Database,
    kind: Kind,
    build_id: str,
    entries: Sequence[Sequence[Any]],
    *,
    first_sequence: int,
    now: datetime,
) -> Appended:
    """Append `entries` (tuples in kind.columns order, JSON as text) to a build."""
    n = len(entries)
    sql = (
        f"UPDATE builds SET {kind.counter} = {kind.counter} + %(n)s "
        f"WHERE id = %(id)s AND status NOT IN ({TERMINAL_SQL})"
        + (f" AND {kind.counter} = %(expected)s - 1" if first_sequence else "")
        + f" RETURNING {kind.counter}, pg_notify('{kind.channel}', id || ' ' || {kind.counter})"
    )
    # One transaction: the counter, the rows and the notification commit together.
    async with db.connection() as pg, pg.transaction(), pg.cursor() as cur:
        await cur.execute(sql, {"n": n, "id": build_id, "expected": first_sequence})
        found = await cur.fetchone()
        if found is None:
            return await _refused(pg, kind, build_id, entries, first_sequence)
        last = int(found[0])
        first = last - n + 1
        columns = ", ".join(("build_id", "seq", *kind.columns, "create_time"))
        async with cur.copy(f"COPY {kind.table} ({columns}) FROM STDIN") as copy:
            for offset, entry in enumerate(entries):
                await copy.write_row((build_id, first + offset, *entry, now))
        return Appended(first, last, False)


async def _refused(
    pg: psycopg.AsyncConnection[Any],
    kind: Kind,
    build_id: str,
    entries: Sequence[Sequence[Any]],
    first_sequence: int,
) -> Appended:
    """Why the counter update matched no row: a retry, or an error."""
    async with pg.cursor(row_factory=dict_row) as cur:
        await cur.execute(f"SELECT status, {kind.counter} AS last FROM builds WHERE id = %s", (build_id,))
        build = await cur.fetchone()
        if build is None:
            raise NotFound("build", build_id, field="build_id")
        last = int(build["last"])
        n = len(entries)
        if first_sequence and first_sequence + n - 1 <= last:
            columns = ", ".join(kind.columns)
            await cur.execute(
                f"SELECT {columns} FROM {kind.table} WHERE build_id = %s AND seq BETWEEN %s AND %s ORDER BY seq",
                (build_id, first_sequence, first_sequence + n - 1),
            )
            stored = await cur.fetchall()
            if len(stored) == n and all(_same(s, e, kind) for s, e in zip(stored, entries, strict=True)):
                return Appended(first_sequence, first_sequence + n - 1, True)
        if BuildStatus(build["status"]) in TERMINAL:
            raise FailedPrecondition(
                f"build {build_id!r} is {build['status']}: a finished build takes no more {kind.name}s",
                reason="BUILD_FINISHED",
                metadata={"current_status": build["status"], "last_sequence": str(last)},
            )
        raise FailedPrecondition(
            f"first_sequence {first_sequence} does not follow the build's last {kind.name} "
            f"sequence {last} (expected {last + 1}), and the batch is not a retry of "
            f"{kind.name}s already written there",
            reason="SEQUENCE_MISMATCH",
            metadata={"last_sequence": str(last), "expected_first_sequence": str(last + 1)},
        )


async def read_after(
    pg: psycopg.AsyncConnection[Any],
    kind: Kind,
    build_id: str,
    after: int,
    limit: int,
    *,
    values: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """Up to `limit` rows with seq > after, oldest first (optionally only
    those whose level/type is in `values`)."""
    where = f" AND {kind.filter_column} = ANY(%(values)s)" if values else ""
    async with pg.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"SELECT * FROM {kind.table} WHERE build_id = %(id)s AND seq > %(after)s{where} "
            f"ORDER BY seq LIMIT %(limit)s",
            {"id": build_id, "after": after, "limit": limit, "values": list(values)},
        )
        return await cur.fetchall()


async def build_position(pg: psycopg.AsyncConnection[Any], kind: Kind, build_id: str) -> tuple[BuildStatus, int]:
    """The build's status and last sequence of this kind; NotFound when absent."""
    async with pg.cursor() as cur:
        await cur.execute(f"SELECT status, {kind.counter} FROM builds WHERE id = %s", (build_id,))
        row = await cur.fetchone()
    if row is None:
        raise NotFound("build", build_id, field="build_id")
    return BuildStatus(row[0]), int(row[1])


async def start_cursor(
    pg: psycopg.AsyncConnection[Any],
    kind: Kind,
    build_id: str,
    *,
    after: int,
    upto: int,
    since: datetime | None,
    tail: int,
    values: Sequence[str],
) -> int:
    """The cursor a stream starts from: after `after`, from `since`, and only
    the last `tail` matching rows up to `upto` (the backlog's end)."""
    cursor = after
    async with pg.cursor() as cur:
        if since is not None:
            await cur.execute(
                f"SELECT min(seq) FROM {kind.table} WHERE build_id = %s AND seq > %s AND create_time >= %s",
                (build_id, cursor, since),
            )
            first = (await cur.fetchone() or (None,))[0]
            cursor = upto if first is None else max(cursor, int(first) - 1)
        if tail > 0:
            where = f" AND {kind.filter_column} = ANY(%(values)s)" if values else ""
            await cur.execute(
                f"SELECT seq FROM {kind.table} WHERE build_id = %(id)s AND seq > %(after)s "
                f"AND seq <= %(upto)s{where} ORDER BY seq DESC OFFSET %(skip)s LIMIT 1",
                {"id": build_id, "after": cursor, "upto": upto, "values": list(values), "skip": tail - 1},
            )
            nth = await cur.fetchone()
            if nth is not None:
                cursor = int(nth[0]) - 1
    return cursor
