"""Typed async queries shared by every resource table (SQLAlchemy Core).

Every mutable table has `id`, `create_time` and `revision`; a resource's
etag is its revision, so an optimistic-concurrency check is one more WHERE
clause on the UPDATE or DELETE that does the work.

List pages are bounded in bytes as well as in rows (`bounded_page`): rows
of up to a few MiB each (app specs, chat messages, builds) must not be
loaded by the thousand to fill one page of RESPONSE_BYTES.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

import psycopg
from psycopg.rows import class_row
from psycopg.types.json import Jsonb
from sqlalchemy import (
    BindParameter,
    ClauseElement,
    Column,
    ColumnElement,
    Select,
    Table,
    Text,
    and_,
    bindparam,
    case,
    cast,
    delete,
    func,
    insert,
    literal,
    select,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql import psycopg as psycopg_dialect
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from server.domain.errors import EtagMismatch, NotFound
from server.store.db import Database
from server.store.rows import typed

Row = RowMapping
R = TypeVar("R")
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Page(Generic[R]):
    """Rows in list order, fetched within a byte budget (see bounded_page).

    `candidates` counts the rows that matched, up to the page size + 1: when
    the caller sends fewer rows than that, more follow them.
    """

    rows: Sequence[R]
    candidates: int

    def typed(self, cls: type[T]) -> Page[T]:
        return Page([typed(cls, row) for row in self.rows], self.candidates)  # type: ignore[arg-type]

    def more_after(self, sent: int) -> bool:
        """Whether rows follow the first `sent` rows of this page."""
        return sent < self.candidates


_INSERT: dict[str, Any] = {}


async def insert_row(conn: AsyncConnection, table: Table, values: Mapping[str, Any]) -> Row:
    if any(isinstance(value, ClauseElement) for value in values.values()):
        # A value computed by PostgreSQL (clock_timestamp()) must be part of the statement.
        result = await conn.execute(insert(table).values(**values).returning(*table.c))
    else:
        # One statement per table, built once; the values travel as parameters.
        stmt = _INSERT.get(table.name)
        if stmt is None:
            stmt = _INSERT[table.name] = insert(table).returning(*table.c)
        result = await conn.execute(stmt, dict(values))
    return result.mappings().one()


_INSERT_SQL: dict[tuple[str, tuple[str, ...]], str] = {}


def hot_params(table: Table, values: Mapping[str, Any]) -> dict[str, Any]:
    """`values` as psycopg parameters for `table`'s columns: JSONB values as
    Jsonb (None stays SQL NULL)."""
    return {
        name: Jsonb(value) if value is not None and isinstance(table.c[name].type, JSONB) else value
        for name, value in values.items()
    }


@functools.cache
def sql_type(table: Table, column: str) -> str:
    """The SQL type of `table`.`column`, as a cast names it (`build_status`, `JSONB`)."""
    return str(table.c[column].type.compile(dialect=_DIALECT))


async def insert_row_hot(
    conn: psycopg.AsyncConnection[Any], table: Table, values: Mapping[str, Any], cls: type[T]
) -> T:
    """insert_row on a psycopg connection (Database.hot_transaction): the
    statement is compiled once per table and set of columns, JSONB values
    travel as Jsonb (None as SQL NULL), and the row comes back as a `cls`."""
    shape = (table.name, tuple(values))
    query = _INSERT_SQL.get(shape)
    if query is None:
        stmt = insert(table).values({name: bindparam(name) for name in values}).returning(*table.c)
        query = _INSERT_SQL[shape] = str(stmt.compile(dialect=_DIALECT))
    params = hot_params(table, values)
    async with conn.cursor(row_factory=class_row(cls)) as cur:
        await cur.execute(query, params)
        row = await cur.fetchone()
    assert row is not None  # INSERT ... RETURNING answers its row or raises
    return row


async def get_row(conn: AsyncConnection, table: Table, key: str, *, lock: bool = False) -> Row | None:
    stmt = select(table).where(table.c.id == key)
    if lock:
        stmt = stmt.with_for_update()
    return (await conn.execute(stmt)).mappings().first()


async def must_get(
    conn: AsyncConnection, table: Table, key: str, resource: str, *, lock: bool = False
) -> Row:
    row = await get_row(conn, table, key, lock=lock)
    if row is None:
        raise NotFound(resource, key)
    return row


async def fetch(db: Database, table: Table, key: str, resource: str, cls: type[T]) -> T:
    """A row by id, as a `cls`, through the hot-path pool (every Get RPC); NotFound when absent."""
    row = await db.get_by_id(table.name, key, class_row(cls))
    if row is None:
        raise NotFound(resource, key)
    return row


def check_revision(row: Row, expected: int | None, resource: str) -> None:
    if expected is not None and row["revision"] != expected:
        raise EtagMismatch(resource, row["id"], str(expected), str(row["revision"]))


async def update_row(
    conn: AsyncConnection,
    table: Table,
    key: str,
    values: Mapping[str, Any],
    *,
    resource: str,
    expected_revision: int | None,
) -> Row:
    """Apply `values` and bump the revision; NotFound or Aborted when it cannot."""
    stmt = update(table).where(table.c.id == key)
    if expected_revision is not None:
        stmt = stmt.where(table.c.revision == expected_revision)
    stmt = stmt.values(**values, revision=table.c.revision + 1).returning(*table.c)
    row = (await conn.execute(stmt)).mappings().first()
    if row is None:
        current = await must_get(conn, table, key, resource)
        check_revision(current, expected_revision, resource)
        raise AssertionError("unreachable: the row exists and its revision matched")
    return row


async def delete_row(
    conn: AsyncConnection, table: Table, key: str, *, resource: str, expected_revision: int | None
) -> None:
    stmt = delete(table).where(table.c.id == key)
    if expected_revision is not None:
        stmt = stmt.where(table.c.revision == expected_revision)
    if (await conn.execute(stmt.returning(table.c.id))).first() is None:
        current = await must_get(conn, table, key, resource)
        check_revision(current, expected_revision, resource)


# Bytes of one item besides its text and JSON columns (ids, timestamps,
# counters, field tags): an over-estimate, so small rows are not over-fetched.
ROW_OVERHEAD = 256


@functools.cache  # built once per table: building it took ~0.35 ms, on every List call
def estimated_bytes(table: Table) -> ColumnElement[int]:
    """An estimate, in SQL, of a row's serialized size, read without loading
    the large values: octet_length() of text is its uncompressed length, which
    PostgreSQL keeps in the TOAST header; pg_column_size() of jsonb is its
    stored size, exact unless compressed, and a compressed jsonb (rare: only
    large, repetitive values) is measured as text, so that compression cannot
    make a page fetch many times its budget."""
    total: ColumnElement[int] = literal(ROW_OVERHEAD)
    for column in table.c:
        if isinstance(column.type, Text):
            total = total + func.coalesce(func.octet_length(column), 0)
        elif isinstance(column.type, JSONB):
            size = case(
                (func.pg_column_compression(column).is_(None), func.pg_column_size(column)),
                else_=func.octet_length(cast(column, Text)),
            )
            total = total + func.coalesce(size, 0)
    return total


def _bounded_statement(
    table: Table,
    where: Sequence[ColumnElement[bool]],
    order: Sequence[tuple[Column[Any], bool]],
    limit: int | BindParameter[int],
) -> Select[Any]:
    """bounded_page's statement; `limit` is the page size + 1 (a value, or a
    parameter when the statement is compiled once and reused)."""
    keys = list(table.primary_key.columns)
    ordered = {column.name: column for column, _ in order}
    candidates = (
        select(*keys, *(c for c in ordered.values() if c not in keys), estimated_bytes(table).label("size"))
        .where(*where)
        .order_by(*(column.desc() if descending else column for column, descending in order))
        .limit(limit)
        .subquery("candidates")
    )
    window_order = [candidates.c[c.name].desc() if d else candidates.c[c.name] for c, d in order]
    sized = select(
        *(candidates.c[c.name] for c in keys),
        func.coalesce(
            func.sum(candidates.c.size).over(order_by=window_order, rows=(None, -1)), 0
        ).label("before"),
        func.count().over().label("candidates"),
    ).subquery("sized")
    return (
        select(table, sized.c.candidates)
        .join(sized, and_(*(table.c[c.name] == sized.c[c.name] for c in keys)))
        .where(sized.c.before < bindparam("budget"))
        .order_by(*(column.desc() if descending else column for column, descending in order))
    )


async def bounded_page(
    conn: AsyncConnection,
    table: Table,
    *,
    where: Sequence[ColumnElement[bool]],
    order: Sequence[tuple[Column[Any], bool]],
    limit: int,
    budget: int,
) -> Page[Row]:
    """The first `limit` rows in `order` ((column, descending) pairs ending in
    a unique key) that fit `budget` bytes by estimate, plus the row that
    crosses it; at least one row when any matches.

    One statement: the first limit + 1 matching keys with their estimated
    sizes (an index range scan; no large value is read), a running sum over
    them, and only then the full rows of the keys whose preceding rows sum to
    less than the budget. The caller cuts exactly on the serialized size.
    """
    stmt = _bounded_statement(table, where, order, limit + 1)
    rows = (await conn.execute(stmt, {"budget": budget})).mappings().all()
    return Page(rows[:limit], rows[0]["candidates"] if rows else 0)


# Newest-first pages run on the hot psycopg pool as SQL compiled once per
# filter shape (which filters are set, how many values an IN list has):
# building, caching and compiling a SQLAlchemy statement and reading its
# typed rows cost more CPU than the query itself (docs/benchmarks.md,
# "Unary calls: where the time went"). Same statement, same plan.
_PAGE_SQL: dict[tuple[Any, ...], str] = {}
_DIALECT = psycopg_dialect.dialect()  # type: ignore[no-untyped-call]


def _page_sql(table: Table, equal: Sequence[str], among: Sequence[tuple[str, int]], after: bool) -> str:
    shape = (table.name, tuple(equal), tuple(among), after)
    query = _PAGE_SQL.get(shape)
    if query is None:
        where: list[ColumnElement[bool]] = [table.c[name] == bindparam(name) for name in equal]
        for name, count in among:
            where.append(table.c[name].in_([bindparam(f"{name}_{i}") for i in range(count)]))
        if after:
            where.append(
                tuple_(table.c.create_time, table.c.id) < tuple_(bindparam("after_time"), bindparam("after_id"))
            )
        order = [(table.c.create_time, True), (table.c.id, True)]
        stmt = _bounded_statement(table, where, order, bindparam("limit"))
        compiled = stmt.compile(dialect=_DIALECT)
        # ROW_OVERHEAD and the like are constants of the statement.
        constants = {k: v for k, v in compiled.params.items() if v is not None}
        query = _PAGE_SQL[shape] = str(compiled) % {
            **{k: f"%({k})s" for k in compiled.params}, **{k: str(int(v)) for k, v in constants.items()},
        }
    return query


def _page_rows(cls: type[T]) -> Callable[[Any], Callable[[Sequence[Any]], tuple[T, int]]]:
    """A psycopg row factory: (a `cls` of the row's columns, its `candidates`)."""
    fields = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]

    def factory(cursor: Any) -> Callable[[Sequence[Any]], tuple[T, int]]:
        names = [column.name for column in cursor.description]
        index = [names.index(name) for name in fields]
        count = names.index("candidates")

        def make(values: Sequence[Any]) -> tuple[T, int]:
            return cls(*[values[i] for i in index]), values[count]

        return make

    return factory


async def newest_page_hot(
    db: Database,
    table: Table,
    cls: type[T],
    *,
    equal: Mapping[str, Any],
    among: Mapping[str, Sequence[Any]],
    limit: int,
    budget: int,
    after: tuple[datetime, str] | None,
) -> Page[T]:
    """newest_page for equality and IN filters (unset ones left out), on the
    hot psycopg pool: `equal` column -> value, `among` column -> values."""
    sets = [(name, list(values)) for name, values in among.items() if values]
    query = _page_sql(table, list(equal), [(name, len(values)) for name, values in sets], after is not None)
    params: dict[str, Any] = {**equal, "limit": limit + 1, "budget": budget}
    for name, values in sets:
        params.update({f"{name}_{i}": value for i, value in enumerate(values)})
    if after is not None:
        params["after_time"], params["after_id"] = after
    async with db.connection() as conn, conn.cursor(row_factory=_page_rows(cls)) as cur:
        await cur.execute(query, params)
        rows = await cur.fetchall()
    return Page([row for row, _ in rows[:limit]], rows[0][1] if rows else 0)


async def newest_first(
    conn: AsyncConnection,
    table: Table,
    *,
    where: Sequence[ColumnElement[bool]],
    limit: int,
    budget: int,
    after: tuple[datetime, str] | None,
) -> Page[Row]:
    """One keyset page ordered by (create_time, id) descending.

    The cursor is the sort key of the last row sent, never an offset: rows
    inserted meanwhile are newer than the cursor (they sort before it), so a
    page never repeats or skips a row because of them.
    """
    where = list(where)
    if after is not None:
        where.append(tuple_(table.c.create_time, table.c.id) < tuple_(after[0], after[1]))
    order = [(table.c.create_time, True), (table.c.id, True)]
    return await bounded_page(conn, table, where=where, order=order, limit=limit, budget=budget)


# --- whole units of work, for resources with no rule between read and write ---


async def create(db: Database, table: Table, cls: type[T], values: Mapping[str, Any]) -> T:
    async with db.transaction() as conn:
        return typed(cls, await insert_row(conn, table, values))


async def modify(
    db: Database, table: Table, cls: type[T], key: str, values: Mapping[str, Any], *,
    resource: str, expected_revision: int | None,
) -> T:
    async with db.transaction() as conn:
        row = await update_row(conn, table, key, values, resource=resource, expected_revision=expected_revision)
    return typed(cls, row)


async def remove(db: Database, table: Table, key: str, *, resource: str, expected_revision: int | None) -> None:
    async with db.transaction() as conn:
        await delete_row(conn, table, key, resource=resource, expected_revision=expected_revision)


async def newest_page(
    db: Database, table: Table, cls: type[T], *, where: Sequence[ColumnElement[bool]], limit: int, budget: int,
    after: tuple[datetime, str] | None,
) -> Page[T]:
    async with db.read() as conn:
        page = await newest_first(conn, table, where=where, limit=limit, budget=budget, after=after)
    return page.typed(cls)
