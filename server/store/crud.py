"""Typed async queries shared by every resource table (SQLAlchemy Core).

Every mutable table has `id`, `create_time` and `revision`; a resource's
etag is its revision, so an optimistic-concurrency check is one more WHERE
clause on the UPDATE or DELETE that does the work.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ClauseElement, ColumnElement, Table, delete, insert, select, tuple_, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from server.domain.errors import Aborted, NotFound
from server.store.db import Database

Row = RowMapping


@dataclass(frozen=True, slots=True)
class Page:
    rows: Sequence[Row]
    # The sort key of the last row, when more rows follow.
    next_after: tuple[datetime, str] | None


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


async def fetch(db: Database, table: Table, key: str, resource: str) -> dict[str, Any]:
    """A row by id through the hot-path pool (every Get RPC); NotFound when absent."""
    row = await db.get_by_id(table.name, key)
    if row is None:
        raise NotFound(resource, key)
    return row


def check_revision(row: Row, expected: int | None, resource: str) -> None:
    if expected is not None and row["revision"] != expected:
        raise Aborted(resource, row["id"], str(expected), str(row["revision"]))


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


async def newest_first(
    conn: AsyncConnection,
    table: Table,
    *,
    where: Sequence[ColumnElement[bool]],
    limit: int,
    after: tuple[datetime, str] | None,
) -> Page:
    """One keyset page ordered by (create_time, id) descending.

    The cursor is the sort key of the last row returned, never an offset:
    rows inserted meanwhile are newer than the cursor (they sort before it),
    so a page never repeats or skips a row because of them.
    """
    key = tuple_(table.c.create_time, table.c.id)
    stmt = select(table).where(*where)
    if after is not None:
        stmt = stmt.where(key < tuple_(after[0], after[1]))
    stmt = stmt.order_by(table.c.create_time.desc(), table.c.id.desc()).limit(limit + 1)
    rows = (await conn.execute(stmt)).mappings().all()
    if len(rows) > limit:
        last = rows[limit - 1]
        return Page(rows[:limit], (last["create_time"], last["id"]))
    return Page(rows, None)
