"""The time windows of the hot log and event tables (migration 0004).

build_logs and build_events are RANGE partitioned by build_id. A build id is
a cuid: 'c', then its creation time in milliseconds in base 36 (8
characters), then counter, fingerprint and random characters. So a range of
ids is a window of creation time: every query that names a build_id touches
one partition with no SQL change, and all of a build's rows live in one
partition, which can be dropped whole once every build in it is archived,
expired or deleted.

A window of `seconds` starting at `start` holds the ids in
[bound(start), bound(start + seconds)). The partition below the first window
(the table as it was before 0004, attached without copying) is
`<table>_initial`, from MINVALUE; `<table>_default` is the DEFAULT partition,
a safety net for ids outside every window (ids not made by cuid, or a clock
far ahead of the windows created so far).

The janitor (retention) creates windows ahead and drops old ones; the
migration creates the current window and a few ahead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

TABLES = ("build_logs", "build_events")
DEFAULT_WINDOW_SECONDS = 3600
_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"
_NAME = re.compile(r"^(?P<table>build_logs|build_events)_w(?P<start>\d{8}t\d{6})$")
_BOUND = re.compile(r"^c[0-9a-z]{8}$")


def base36(value: int) -> str:
    if value < 0:
        raise ValueError("base36 of a negative number")
    digits = ""
    while True:
        value, digit = divmod(value, 36)
        digits = _DIGITS[digit] + digits
        if value == 0:
            return digits


def bound(time: datetime) -> str:
    """The smallest cuid made at `time` or later: 'c' + base36(ms), 8 wide."""
    ms = int(time.timestamp() * 1000)
    return "c" + base36(ms).rjust(8, "0")


def time_of_bound(value: str) -> datetime:
    """The inverse of bound() (to the millisecond)."""
    if not _BOUND.match(value):
        raise ValueError(f"not a window bound: {value!r}")
    return datetime.fromtimestamp(int(value[1:], 36) / 1000, UTC)


def window_start(time: datetime, seconds: int = DEFAULT_WINDOW_SECONDS) -> datetime:
    """The start of the window of `seconds` that holds `time` (windows are
    aligned on the epoch, so every process computes the same ones)."""
    epoch = int(time.timestamp())
    return datetime.fromtimestamp(epoch - epoch % seconds, UTC)


def window_name(table: str, start: datetime) -> str:
    """The partition of `table` whose window starts at `start`:
    build_logs_w20261207t040000 (UTC)."""
    if table not in TABLES:
        raise ValueError(f"not a partitioned table: {table!r}")
    return f"{table}_w{start.astimezone(UTC):%Y%m%dt%H%M%S}"


def initial_name(table: str) -> str:
    return f"{table}_initial"


def default_name(table: str) -> str:
    return f"{table}_default"


def create_window_sql(table: str, start: datetime, seconds: int = DEFAULT_WINDOW_SECONDS) -> str:
    """CREATE TABLE IF NOT EXISTS of the window of `table` starting at
    `start`. It inherits the parent's indexes, keys and the id default.
    Fails when the DEFAULT partition holds rows of that window."""
    end = start + timedelta(seconds=seconds)
    return (
        f'CREATE TABLE IF NOT EXISTS "{window_name(table, start)}" PARTITION OF "{table}" '
        f"FOR VALUES FROM ('{bound(start)}') TO ('{bound(end)}')"
    )


def windows_ahead(now: datetime, seconds: int, ahead: int) -> list[datetime]:
    """The starts of the window holding `now` and the `ahead` after it."""
    first = window_start(now, seconds)
    return [first + timedelta(seconds=seconds * i) for i in range(ahead + 1)]


@dataclass(frozen=True, slots=True)
class Partition:
    name: str
    lower: str | None   # None: MINVALUE (the initial partition) or DEFAULT
    upper: str | None   # None: MAXVALUE or DEFAULT
    default: bool = False

    @property
    def start(self) -> datetime | None:
        """The creation time of the window's first ids (None: unbounded)."""
        return None if self.lower is None else time_of_bound(self.lower)

    @property
    def end(self) -> datetime | None:
        return None if self.upper is None else time_of_bound(self.upper)


_RANGE = re.compile(r"^FOR VALUES FROM \((?P<lower>[^)]*)\) TO \((?P<upper>[^)]*)\)$")

PARTITIONS_SQL = """
SELECT c.relname, pg_get_expr(c.relpartbound, c.oid)
FROM pg_inherits i
JOIN pg_class c ON c.oid = i.inhrelid
JOIN pg_class p ON p.oid = i.inhparent
JOIN pg_namespace n ON n.oid = p.relnamespace
WHERE p.relname = %s AND n.nspname = current_schema()
ORDER BY c.relname
"""


def _value(text: str) -> str | None:
    text = text.strip()
    if text in ("MINVALUE", "MAXVALUE"):
        return None
    return text.strip("'")


def parse_partition(name: str, expression: str) -> Partition:
    if expression == "DEFAULT":
        return Partition(name, None, None, default=True)
    match = _RANGE.match(expression)
    if match is None:
        raise ValueError(f"unexpected partition bound of {name}: {expression}")
    return Partition(name, _value(match["lower"]), _value(match["upper"]))


async def partitions(conn: psycopg.AsyncConnection[Any], table: str) -> list[Partition]:
    """The partitions of `table`, in the order of their ranges (the DEFAULT last)."""
    rows = await (await conn.execute(PARTITIONS_SQL, (table,))).fetchall()
    found = [parse_partition(name, expression) for name, expression in rows]
    return sorted(found, key=lambda p: (p.default, p.lower is not None, p.lower or ""))


def is_window(name: str) -> bool:
    return _NAME.match(name) is not None


_PARTITION = re.compile(r"^(build_logs|build_events)_(w\d{8}t\d{6}|initial|default)$")


def is_partition(name: str | None) -> bool:
    """A partition's table name (the models describe only the parents)."""
    return name is not None and _PARTITION.match(name) is not None


def include_name(name: str | None, type_: str, parent_names: Any) -> bool:
    """Alembic's include_name: the schema without the partitions."""
    return not (type_ == "table" and is_partition(name))
