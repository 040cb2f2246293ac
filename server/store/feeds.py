"""Build logs and build events: append-only, per-build sequenced feeds.

One `Kind` describes each feed (table, counter column, NOTIFY channel), so
logs and events share every query.

The append path is three round trips in one transaction:
1. `UPDATE builds SET <counter> = <counter> + n ... RETURNING <counter>`:
   takes the build's row lock, refuses finished builds and (when the writer
   gave first_sequence) a wrong offset or a stale secrets_version, sets the
   call's deadline as lock_timeout/statement_timeout, and reserves n
   sequence numbers. No NOTIFY: it would serialise every append's commit
   database-wide; the caller tells the hub after the commit
   (server.live.notifier);
2. `COPY ... FROM STDIN` of the rows (the fastest bulk path, see
   docs/benchmarks.md);
3. COMMIT.
The row lock serialises the appends of one build, so sequence order is
commit order and `seq > cursor` never skips a row; appends to different
builds run in parallel. Under the same lock the UPDATE moves the build's
last row time forward (`greatest(last, now)`): replicas' clocks and the
wait for the lock can no longer make create_time go backwards in seq.

Reads are bounded in rows and in bytes. Every row stores `wire_bytes`, an
upper bound of its size in a response, and a read cuts where the running
sum of it passes the caller's budget, so a read of 80 KiB lines brings one
response's worth of rows out of PostgreSQL, not a thousand of them; the rpc
layer then cuts exactly on the serialized sizes. Filters (levels, types)
walk the index (build_id, level|type, seq) once per wanted value and merge,
so a rare level costs the rows it matches, not the length of the log. A
read may take an upper bound `upto` (a committed position): having found
every matching row up to it, the caller's cursor moves to it exactly.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

import psycopg
from psycopg.rows import dict_row

from server.domain.errors import NotFound
from server.domain.feeds import may_be_retry, refusal
from server.domain.status import TERMINAL, BuildStatus
from server.store.db import Database, DatabaseBusy

TERMINAL_SQL = ", ".join(f"'{status.value}'" for status in sorted(TERMINAL))


@dataclass(frozen=True, slots=True)
class Kind:
    name: str            # "log" / "event", for messages
    table: str
    counter: str         # column of builds holding the last sequence number
    channel: str         # NOTIFY channel
    last_time: str       # column of builds holding the newest row's create_time
    columns: tuple[str, ...]  # payload columns written by an append, after build_id and seq
    types: tuple[str, ...]    # their PostgreSQL types
    filter_column: str   # column the stream/list filter applies to (level / type)


LOGS = Kind("log", "build_logs", "last_log_seq", "bp_log", "last_log_time",
            ("level", "message", "metadata", "step"), ("text", "text", "jsonb", "jsonb"), "level")
EVENTS = Kind("event", "build_events", "last_event_seq", "bp_event", "last_event_time",
              ("type", "data"), ("text", "jsonb"), "type")

# Appends of up to this many entries are one statement (below); larger ones
# use COPY. A statement is one round trip where the COPY path takes five
# (BEGIN, the counter, COPY, its data, COMMIT), and at 50 lines a batch the
# round trips are most of an append's cost; COPY moves rows faster (see
# docs/benchmarks.md), which wins once a batch is large.
ONE_STATEMENT_ROWS = 200


# What the server adds to an appended entry in a response, at most: id,
# build_id (32 characters), sequence, create_time, and the framing of the
# element in the repeated field (a tag and a length of up to 3 bytes).
SERVER_FIELDS_BYTES = 11 + 34 + 11 + 24 + 4 + 12


def wire_bound(entry_bytes: int) -> int:
    """The stored wire_bytes of an entry whose own serialized size
    (LogEntry/EventEntry.ByteSize(), the fields the row shares with the
    response) is `entry_bytes`."""
    return entry_bytes + SERVER_FIELDS_BYTES


@dataclass(frozen=True, slots=True)
class Appended:
    first: int
    last: int
    already_written: bool


def _same(stored: dict[str, Any], entry: Sequence[Any], kind: Kind) -> bool:
    """Whether a stored row holds the same line as `entry` (JSON compared as
    values; the trailing wire size is derived, not compared)."""
    for column, value in zip(kind.columns, entry[: len(kind.columns)], strict=True):
        if column in ("metadata", "data", "step"):
            if stored[column] != (json.loads(value) if value is not None else None):
                return False
        elif stored[column] != value:
            return False
    return True


class StaleSecrets(Exception):
    """The append's masker was made from an older secrets_version than the
    build's (secrets were registered since, maybe on another replica):
    nothing was written; mask again with the current secrets."""


class _Turns:
    """One append at a time per build in this process.

    Appends to one build serialise on its row lock in PostgreSQL anyway; if
    each waited there, a hot build with dozens of concurrent appenders would
    hold dozens of pooled connections doing nothing, and calls on other
    builds would find the pool empty. Waiting here, in memory and in arrival
    order, each process holds at most one connection per build for appends.
    (It also keeps pipelined appends of one writer in the order they arrived.)
    """

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, list[int]]] = {}

    @contextlib.asynccontextmanager
    async def turn(self, build_id: str, budget: float) -> AsyncIterator[None]:
        lock, waiting = self._locks.setdefault(build_id, (asyncio.Lock(), [0]))
        waiting[0] += 1
        try:
            try:
                async with asyncio.timeout(budget):
                    await lock.acquire()
            except TimeoutError:
                raise DatabaseBusy(
                    f"build {build_id!r} has more concurrent appends than it could take in time; retry with backoff"
                ) from None
            try:
                yield
            finally:
                lock.release()
        finally:
            waiting[0] -= 1
            if not waiting[0]:
                del self._locks[build_id]


_turns = _Turns()


async def append(
    db: Database,
    kind: Kind,
    build_id: str,
    entries: Sequence[Sequence[Any]],
    *,
    first_sequence: int,
    now: datetime,
    secrets_version: int | None = None,
    unmasked: Sequence[Sequence[Any]] | None = None,
) -> Appended:
    """Append `entries` to a build: tuples in kind.columns order (JSON as
    text), each followed by the entry's wire size bound (see wire_bound).
    With `secrets_version` (that of the secrets the entries were masked
    with), StaleSecrets when the build's has moved: the check is part of the
    statement that takes the build's row lock, so a registration committed
    before the append is never missed, on any replica. `unmasked`, the
    batch as sent, is only compared with stored rows to recognise a retry
    (see _refused), never written."""
    n = len(entries)
    params: dict[str, Any] = {
        "n": n, "id": build_id, "expected": first_sequence, "now": now, "secrets": secrets_version,
        "ms": str(db.deadline_ms()),
    }
    versioned = secrets_version is not None
    # The counter and the rows commit together: one statement (its own
    # transaction), or one explicit transaction around COPY.
    async with _turns.turn(build_id, db.budget()[0]), db.connection() as pg:
        if n <= ONE_STATEMENT_ROWS:
            # One JSON document: json.dumps is C, where psycopg's array
            # adapters would quote each string in Python (measured: most of
            # an append's CPU).
            params["rows"] = json.dumps(entries, ensure_ascii=False, separators=(",", ":"))
            async with pg.cursor() as cur:
                await cur.execute(_one_statement(kind, bool(first_sequence), versioned), params)
                found = await cur.fetchone()
            if found is None:
                return await _refused(pg, kind, build_id, entries, first_sequence, secrets_version, unmasked)
            last = int(found[0])
            return Appended(last - n + 1, last, False)
        async with pg.transaction(), pg.cursor() as cur:
            await cur.execute(_counter(kind, bool(first_sequence), versioned), params)
            found = await cur.fetchone()
            if found is None:
                return await _refused(pg, kind, build_id, entries, first_sequence, secrets_version, unmasked)
            last, stamp = int(found[0]), found[1]
            first = last - n + 1
            columns = ", ".join(("build_id", "seq", *kind.columns, "wire_bytes", "create_time"))
            async with cur.copy(f"COPY {kind.table} ({columns}) FROM STDIN") as copy:
                for offset, entry in enumerate(entries):
                    await copy.write_row((build_id, first + offset, *entry, stamp))
            return Appended(first, last, False)


def _counter(kind: Kind, expected: bool, versioned: bool = False, notify: bool = False) -> str:
    """Reserve %(n)s sequence numbers of a build that is not finished (and
    whose last one is %(expected)s - 1). `notify` (the old path, kept for
    bench `scale` only) also queues a notification in the transaction, which
    serialises every notifying commit of the database (see
    server.live.notifier)."""
    return (
        f"UPDATE builds SET {kind.counter} = {kind.counter} + %(n)s, "
        f"{kind.last_time} = greatest({kind.last_time}, %(now)s) "
        f"WHERE id = %(id)s AND status NOT IN ({TERMINAL_SQL})"
        # The call's deadline, into PostgreSQL before the row lock is waited
        # for: the wait (and the rest of the transaction) ends at the
        # deadline, so an append its caller saw fail is never written later.
        " AND set_config('lock_timeout', %(ms)s, true) IS NOT NULL"
        " AND set_config('statement_timeout', %(ms)s, true) IS NOT NULL"
        + (f" AND {kind.counter} = %(expected)s - 1" if expected else "")
        + (" AND secrets_version = %(secrets)s" if versioned else "")
        + f" RETURNING {kind.counter} AS last, {kind.last_time} AS stamp"
        + (f", pg_notify('{kind.channel}', id || ' ' || {kind.counter}) AS notified" if notify else "")
    )


def _one_statement(kind: Kind, expected: bool, versioned: bool = False, notify: bool = False) -> str:
    """The counter and the rows in one statement: the rows, a JSON array of
    entries in %(rows)s (payload columns, then the wire size), are inserted
    only if the counter moved, so a refused append writes nothing."""
    values = [
        f"e.entry->>{index}" if type_ == "text" else f"(e.entry->>{index})::{type_}"
        for index, type_ in enumerate(kind.types)
    ]
    columns = ", ".join(("build_id", "seq", *kind.columns, "wire_bytes", "create_time"))
    return (
        f"WITH counter AS ({_counter(kind, expected, versioned, notify)}), "
        f"inserted AS (INSERT INTO {kind.table} ({columns}) "
        f"SELECT %(id)s, counter.last - %(n)s + e.ord, {', '.join(values)}, "
        f"(e.entry->>{len(kind.types)})::int, counter.stamp "
        "FROM counter, json_array_elements(%(rows)s::json) WITH ORDINALITY AS e(entry, ord)) "
        "SELECT last FROM counter"
    )


async def _refused(
    pg: psycopg.AsyncConnection[Any],
    kind: Kind,
    build_id: str,
    entries: Sequence[Sequence[Any]],
    first_sequence: int,
    secrets_version: int | None = None,
    unmasked: Sequence[Sequence[Any]] | None = None,
) -> Appended:
    """The counter update matched no row: read why, and let the domain's
    append rules say whether it is a retry or which error it is. A retry's
    every row is stored as in `entries` (masked as now) or as in `unmasked`
    (the line as sent: the first attempt was written before a value it
    holds was registered); either way nothing is written here."""
    async with pg.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"SELECT status, {kind.counter} AS last, secrets_version FROM builds WHERE id = %s", (build_id,)
        )
        build = await cur.fetchone()
        if build is None:
            raise NotFound("build", build_id, field="build_id")
        if (
            secrets_version is not None and build["secrets_version"] != secrets_version
            and BuildStatus(build["status"]) not in TERMINAL
        ):
            raise StaleSecrets()
        last = int(build["last"])
        n = len(entries)
        if may_be_retry(first_sequence, n, last):
            columns = ", ".join(kind.columns)
            await cur.execute(
                f"SELECT {columns} FROM {kind.table} WHERE build_id = %s AND seq BETWEEN %s AND %s ORDER BY seq",
                (build_id, first_sequence, first_sequence + n - 1),
            )
            stored = await cur.fetchall()
            sent = unmasked if unmasked is not None else entries
            if len(stored) == n and all(
                _same(row, entry, kind) or (entry is not plain and _same(row, plain, kind))
                for row, entry, plain in zip(stored, entries, sent, strict=True)
            ):
                return Appended(first_sequence, first_sequence + n - 1, True)
        raise refusal(kind.name, build_id, BuildStatus(build["status"]), last, first_sequence)


def fitting(sizes: Iterable[int], max_bytes: int) -> int:
    """How many leading items of these sizes fit in max_bytes together; at
    least one (a single item never exceeds a response's budget: the field
    limits keep items far below it, see server.domain.limits)."""
    count, total = 0, 0
    for size in sizes:
        total += size
        if total > max_bytes and count:
            break
        count += 1
    return count


@dataclass(frozen=True, slots=True)
class Rows:
    """One bounded read: rows oldest first, and whether matching rows were
    left after the last one (by the row limit or the byte budget). `tier`
    is the build's archive_state seen by the same statement: rows come only
    while it is 'hot' (None: the build is gone)."""

    rows: list[dict[str, Any]]
    more: bool
    tier: str | None = "hot"


def _matching(kind: Kind, *, values: Sequence[str], upto: int | None, descending: bool = False) -> str:
    """Rows of %(id)s with %(after)s < seq (<= %(upto)s) whose filter column
    is in %(values)s, in seq order, at most %(scan)s of them.

    With values this is one index range scan of (build_id, value, seq) per
    value, each stopping after %(scan)s rows, merged by seq: the work is
    bounded by the rows wanted, however many rows of other values lie between
    them (a plain `value = ANY(...) ORDER BY seq` walks the whole log)."""
    order = "seq DESC" if descending else "seq"
    bound = " AND seq <= %(upto)s" if upto is not None else ""
    if not values:
        return (
            f"SELECT * FROM {kind.table} WHERE build_id = %(id)s AND seq > %(after)s{bound} "
            f"ORDER BY {order} LIMIT %(scan)s"
        )
    return (
        f"SELECT r.* FROM unnest(%(values)s::text[]) AS v(value) CROSS JOIN LATERAL ("
        f"SELECT * FROM {kind.table} WHERE build_id = %(id)s AND {kind.filter_column} = v.value "
        f"AND seq > %(after)s{bound} ORDER BY {order} LIMIT %(scan)s) AS r "
        f"ORDER BY r.{order} LIMIT %(scan)s"
    )


@dataclass(frozen=True, slots=True)
class Read:
    """One bounded read: the matching rows with after < seq (<= upto), oldest
    first, at most `limit` of them, cut after the row whose running sum of
    wire_bytes reaches `max_bytes` (the first row always comes; wire_bytes
    is an upper bound, so the caller's exact cut on real sizes never needs a
    row left here)."""

    kind: Kind
    build_id: str
    after: int
    limit: int
    max_bytes: int
    upto: int | None = None
    values: Sequence[str] = ()

    def statement(self) -> tuple[str, dict[str, Any]]:
        """The SQL and its parameters (also EXPLAINed by the bench). The
        window runs over at most limit + 1 rows (the inner LIMIT stops the
        scan), and rows past the cut are never detoasted: PostgreSQL reads
        their heap tuples, not their messages.

        The build's tier is read by the same statement (one snapshot): rows
        come only while its logs are 'hot', and a build archived meanwhile
        answers its new tier instead of rows that are no longer the truth
        (nor a partition dropped since). The first row always carries the
        tier; a read with no rows is that row alone, its columns NULL."""
        matching = _matching(self.kind, values=self.values, upto=self.upto).replace(
            "WHERE build_id = %(id)s", "WHERE build_id = %(id)s AND b.archive_state = 'hot'"
        )
        sql = (
            "SELECT b.archive_state AS tier, c.* FROM builds AS b LEFT JOIN LATERAL ("
            "SELECT * FROM (SELECT *, sum(wire_bytes) OVER w - wire_bytes AS bytes_before, "
            "lead(seq) OVER w AS next_seq FROM ("
            + matching
            + ") AS matching WINDOW w AS (ORDER BY seq)) AS counted "
            "WHERE bytes_before < %(max_bytes)s ORDER BY seq LIMIT %(limit)s) AS c ON true "
            "WHERE b.id = %(id)s ORDER BY c.seq"
        )
        params = {
            "id": self.build_id, "after": self.after, "upto": self.upto, "values": list(self.values),
            "scan": self.limit + 1, "limit": self.limit, "max_bytes": self.max_bytes,
        }
        return sql, params


def scan_statement(
    kind: Kind, build_id: str, after: int, upto: int, *, values: Sequence[str], limit: int, max_bytes: int,
    times: bool = False,
) -> tuple[str, dict[str, Any]]:
    """Read's statement for a reader that looks at every line's message
    and sends few of them (a search), or renders each as text (a download,
    `times`): the same rows, cut at the same place, the tier checked the
    same way, but only (seq, value, message[, create_time]) of each: no row
    is built whole (metadata parsed, a message encoded) to be dropped."""
    time = ", c.create_time" if times else ""
    matching = _matching(kind, values=values, upto=upto).replace(
        "WHERE build_id = %(id)s", "WHERE build_id = %(id)s AND b.archive_state = 'hot'"
    )
    sql = (
        f"SELECT b.archive_state AS tier, c.seq, c.value, c.message, c.next_seq{time} FROM builds AS b "
        "LEFT JOIN LATERAL ("
        f"SELECT * FROM (SELECT seq, {kind.filter_column} AS value, message, create_time, "
        "sum(wire_bytes) OVER w - wire_bytes AS bytes_before, lead(seq) OVER w AS next_seq FROM ("
        + matching
        + ") AS matching WINDOW w AS (ORDER BY seq)) AS counted "
        "WHERE bytes_before < %(max_bytes)s ORDER BY seq LIMIT %(limit)s) AS c ON true "
        "WHERE b.id = %(id)s ORDER BY c.seq"
    )
    return sql, {"id": build_id, "after": after, "upto": upto, "values": list(values), "scan": limit + 1,
                 "limit": limit, "max_bytes": max_bytes}


async def scan(
    db: Database, kind: Kind, build_id: str, after: int, upto: int, *, values: Sequence[str], limit: int,
    max_bytes: int, times: bool = False,
) -> tuple[list[tuple[Any, ...]], bool, str | None]:
    """scan_statement on a connection of its own: (seq, value, message) of
    each row (and its create_time, with `times`), whether matching rows were
    left, and the build's tier (None: no such build)."""
    async with db.connection() as pg, pg.cursor() as cur:
        await cur.execute(*scan_statement(
            kind, build_id, after, upto, values=values, limit=limit, max_bytes=max_bytes, times=times))
        rows = await cur.fetchall()
    if not rows:
        return [], False, None
    if rows[0][1] is None:
        return [], False, rows[0][0]
    more, tier = rows[-1][4] is not None, rows[0][0]
    if times:
        return [(row[1], row[2], row[3], row[5]) for row in rows], more, tier
    return [(row[1], row[2], row[3]) for row in rows], more, tier


async def rows_at(db: Database, kind: Kind, build_id: str, seqs: Sequence[int]) -> list[dict[str, Any]]:
    """The whole rows of these sequences, in seq order."""
    async with db.connection() as pg, pg.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"SELECT * FROM {kind.table} WHERE build_id = %s AND seq = ANY(%s) ORDER BY seq", (build_id, list(seqs))
        )
        return await cur.fetchall()


async def read_after(pg: psycopg.AsyncConnection[Any], read: Read) -> Rows:
    async with pg.cursor(row_factory=dict_row) as cur:
        await cur.execute(*read.statement())
        rows = await cur.fetchall()
    if not rows:
        return Rows([], False, None)
    tier = rows[0].pop("tier")
    if rows[0]["seq"] is None:
        return Rows([], False, tier)
    for row in rows[1:]:
        del row["tier"]
    return Rows(rows, rows[-1]["next_seq"] is not None, tier)


class Position(NamedTuple):
    """A build's status, last sequence of a kind, and the tier of its logs
    and events ('hot', 'archived' or 'expired'; expire_time once expired)."""

    status: BuildStatus
    last: int
    tier: str = "hot"
    expire_time: datetime | None = None


async def build_position(pg: psycopg.AsyncConnection[Any], kind: Kind, build_id: str) -> Position:
    """The build's position and tier; NotFound when absent."""
    async with pg.cursor() as cur:
        await cur.execute(
            f"SELECT status, {kind.counter}, archive_state, expire_time FROM builds WHERE id = %s", (build_id,)
        )
        row = await cur.fetchone()
    if row is None:
        raise NotFound("build", build_id, field="build_id")
    return Position(BuildStatus(row[0]), int(row[1]), row[2], row[3])


def since_statement(
    kind: Kind, build_id: str, *, after: int, upto: int, since: datetime
) -> tuple[str, dict[str, Any]]:
    """The SQL of since_cursor (a binary search, see there) and its parameters.
    Invariant: rows in (after, lo] are older than `since`, rows in
    [hi, upto] are not."""
    sql = (
        "WITH RECURSIVE search(lo, hi) AS ("
        "SELECT %(after)s::bigint, %(upto)s::bigint + 1 "
        "UNION ALL "
        "SELECT CASE WHEN r.create_time < %(since)s THEN m.mid ELSE s.lo END, "
        "CASE WHEN r.create_time < %(since)s THEN s.hi ELSE m.mid END "
        "FROM search AS s CROSS JOIN LATERAL (SELECT (s.lo + s.hi) / 2 AS mid) AS m "
        f"JOIN {kind.table} AS r ON r.build_id = %(id)s AND r.seq = m.mid "
        "WHERE s.hi - s.lo > 1) "
        "SELECT min(hi) FROM search"
    )
    return sql, {"id": build_id, "after": after, "upto": upto, "since": since}


async def since_cursor(
    pg: psycopg.AsyncConnection[Any], kind: Kind, build_id: str, *, after: int, upto: int, since: datetime
) -> int:
    """The cursor before the first row in (after, upto] created at or after
    `since` (upto when there is none).

    create_time does not decrease with seq (see append) and seq has no gaps,
    so this is a binary search over seq by primary key: about log2(n) index
    lookups in one statement, with no index on create_time for appends to
    maintain."""
    async with pg.cursor() as cur:
        await cur.execute(*since_statement(kind, build_id, after=after, upto=upto, since=since))
        found = await cur.fetchone()
    assert found is not None
    return max(after, int(found[0]) - 1)


def tail_statement(
    kind: Kind, build_id: str, *, after: int, upto: int, tail: int, values: Sequence[str]
) -> tuple[str, dict[str, Any]]:
    """The SQL of a filtered tail_cursor and its parameters."""
    sql = (
        "SELECT seq FROM (" + _matching(kind, values=values, upto=upto, descending=True) + ") AS t "
        "ORDER BY seq DESC OFFSET %(skip)s LIMIT 1"
    )
    return sql, {"id": build_id, "after": after, "upto": upto, "values": list(values), "scan": tail, "skip": tail - 1}


async def tail_cursor(
    pg: psycopg.AsyncConnection[Any], kind: Kind, build_id: str, *, after: int, upto: int, tail: int,
    values: Sequence[str],
) -> int:
    """The cursor before the last `tail` matching rows in (after, upto].

    Without a filter seq has no gaps, so that is arithmetic; with one, the
    last `tail` rows of each wanted value, newest first, from the filter index."""
    if not values:
        return max(after, upto - tail)
    async with pg.cursor() as cur:
        await cur.execute(*tail_statement(kind, build_id, after=after, upto=upto, tail=tail, values=values))
        nth = await cur.fetchone()
    return after if nth is None else int(nth[0]) - 1


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
    if since is not None and cursor < upto:
        cursor = await since_cursor(pg, kind, build_id, after=cursor, upto=upto, since=since)
    if tail > 0 and cursor < upto:
        cursor = await tail_cursor(pg, kind, build_id, after=cursor, upto=upto, tail=tail, values=values)
    return cursor


# --- whole units of work on the hot-path pool (what the core and the hub call) ---


async def positions(db: Database, build_ids: Sequence[str]) -> list[tuple[str, BuildStatus, int, int]]:
    """(id, status, last log sequence, last event sequence) of the builds of
    `build_ids` that exist (the hub's poll of its followed builds)."""
    async with db.connection() as pg, pg.cursor() as cur:
        await cur.execute(
            "SELECT id, status, last_log_seq, last_event_seq FROM builds WHERE id = ANY(%s)", (list(build_ids),)
        )
        return [(row[0], BuildStatus(row[1]), int(row[2]), int(row[3])) for row in await cur.fetchall()]


async def position(db: Database, kind: Kind, build_id: str) -> Position:
    """build_position on a connection of its own."""
    async with db.connection() as pg:
        return await build_position(pg, kind, build_id)


async def read(db: Database, bounded: Read) -> Rows:
    """read_after on a connection of its own."""
    async with db.connection() as pg:
        return await read_after(pg, bounded)


async def start(
    db: Database, kind: Kind, build_id: str, *, after: int, since: datetime | None, tail: int, values: Sequence[str]
) -> tuple[Position, int | None]:
    """Where a stream starts: the build's position (its last sequence is the
    backlog's end) and, while its logs are hot, the cursor to send from (see
    start_cursor); None when they are not (the reader asks the archive)."""
    async with db.connection() as pg:
        found = await build_position(pg, kind, build_id)
        if found.tier != "hot":
            return found, None
        cursor = await start_cursor(
            pg, kind, build_id, after=after, upto=found.last, since=since, tail=tail, values=values
        )
    return found, cursor


# --- the archive's chunk index (written by server.archive.job; read here as rows) ---


def chunks_statement(
    kind: Kind, build_id: str, *, after: int, upto: int, values: Sequence[str], limit: int,
    descending: bool = False, since: datetime | None = None,
) -> tuple[str, dict[str, Any]]:
    """Chunks holding entries in (after, upto] (that hold one of `values`,
    when given; whose last entry is not older than `since`, when given), in
    chunk order (newest first when descending), at most `limit`."""
    sql = (
        "SELECT * FROM archive_chunks WHERE build_id = %(id)s AND kind = %(kind)s "
        "AND last_seq > %(after)s AND first_seq <= %(upto)s"
        + (" AND value_names && %(values)s::text[]" if values else "")
        + (" AND last_time >= %(since)s" if since is not None else "")
        + f" ORDER BY chunk{' DESC' if descending else ''} LIMIT %(limit)s"
    )
    return sql, {
        "id": build_id, "kind": kind.name, "after": after, "upto": upto, "values": list(values),
        "since": since, "limit": limit,
    }


async def chunks(
    db: Database, kind: Kind, build_id: str, *, after: int, upto: int, values: Sequence[str] = (), limit: int,
    descending: bool = False, since: datetime | None = None,
) -> list[dict[str, Any]]:
    """chunks_statement on a connection of its own: archive_chunks rows."""
    sql, params = chunks_statement(
        kind, build_id, after=after, upto=upto, values=values, limit=limit, descending=descending, since=since
    )
    async with db.connection() as pg, pg.cursor(row_factory=dict_row) as cur:
        await cur.execute(sql, params)
        return await cur.fetchall()
