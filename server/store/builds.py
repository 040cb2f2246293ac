"""Builds in PostgreSQL: each function opens its own unit of work on the
pool that suits it (the hot-path psycopg pool for a read by id, a list and
CreateBuild's fixed statements, a SQLAlchemy transaction for the other
writes).

Writes that depend on a rule read the facts it needs under the build's row
lock, hand them to a pure function of server.domain.builds (passed in by
the core), and write what it returns: the store locks, reads and writes,
and decides nothing.

Every write to a build row also sends `pg_notify('bp_build', ...)` in the
same transaction, so WatchBuild followers and log followers on every replica
learn about it exactly when it commits.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import datetime
from typing import Any

import psycopg
import sqlalchemy
from psycopg.rows import class_row
from sqlalchemy import bindparam
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncConnection

from server.domain.builds import Ownership, SpecSource, StatusChange
from server.domain.status import TERMINAL, BuildStatus
from server.store import crud
from server.store.crud import Page
from server.store.db import Database
from server.store.models import build_secrets, builds
from server.store.rows import BuildRow, typed

BUILD_CHANNEL = "bp_build"

def notify_payload(row: BuildRow) -> str:
    """`build_id status last_log_seq last_event_seq`: enough for a follower to
    know whether the build ended and where its logs and events end."""
    return f"{row.id} {row.status} {row.last_log_seq} {row.last_event_seq}"


# Fixed statements as driver SQL: no SQLAlchemy statement to build, key and
# look up per call (CreateBuild's profile, docs/benchmarks.md).
_NOTIFY = f"SELECT pg_notify('{BUILD_CHANNEL}', %(payload)s)"
_SPEC = "SELECT id, project_id, content FROM app_specs WHERE id = %(id)s"
_SECRET = "INSERT INTO build_secrets (build_id, value_hash, value) VALUES (%s, %s, %s)"
_OWNERSHIP = (
    "SELECT (SELECT user_id FROM projects WHERE id = %(project_id)s), "
    "EXISTS (SELECT 1 FROM users WHERE id = %(user_id)s)"
)


async def _notify(conn: AsyncConnection, row: BuildRow) -> None:
    await conn.exec_driver_sql(_NOTIFY, {"payload": notify_payload(row)})


async def get(db: Database, key: str) -> BuildRow:
    """A build by id through the hot-path pool (GetBuild, WatchBuild); NotFound when absent."""
    return await crud.fetch(db, builds, key, "build", BuildRow)


async def ownership(conn: AsyncConnection, project_id: str, user_id: str) -> Ownership:
    """The project's owner and whether the user exists, in one statement."""
    result = await conn.exec_driver_sql(_OWNERSHIP, {"project_id": project_id, "user_id": user_id})
    return _ownership(project_id, user_id, result.one())


async def _ownership_hot(conn: psycopg.AsyncConnection[Any], project_id: str, user_id: str) -> Ownership:
    """ownership() on a psycopg connection (CreateBuild's transaction)."""
    cursor = await conn.execute(_OWNERSHIP, {"project_id": project_id, "user_id": user_id})
    return _ownership(project_id, user_id, await cursor.fetchone())


def _ownership(project_id: str, user_id: str, row: Any) -> Ownership:
    """_OWNERSHIP's one row (the owner, whether the user exists) as Ownership."""
    return Ownership(project_id, user_id, row[0], bool(row[1]))


async def create(
    db: Database,
    values: Mapping[str, Any],
    *,
    decide: Callable[[Ownership, SpecSource | None], Mapping[str, Any]],
    secrets: Sequence[str] = (),
) -> BuildRow:
    """Insert a build, with the secret values its logs mask: `decide` gets
    the project's ownership and the named app spec (when app_spec_id is
    set) and returns the values to insert.

    The common case (no app spec named, no secrets) is one statement: the
    values `decide` returns for the ownership the caller claims (the user
    owns the project) are inserted only where the database confirms that
    claim, and the notification goes in the same statement. Only when it
    inserted nothing (the claim was wrong: `decide` must see the real facts
    and refuse) does the full transaction below run: one round trip instead
    of five (BEGIN, the facts, the insert, NOTIFY, COMMIT) for every build
    that is created."""
    if not secrets and not values.get("app_spec_id"):
        claimed = Ownership(values["project_id"], values["user_id"], values["user_id"], True)
        made = await _insert_if_owned(db, decide(claimed, None))
        if made is not None:
            return made
    async with db.hot_transaction() as conn:
        facts = await _ownership_hot(conn, values["project_id"], values["user_id"])
        source = None
        if values.get("app_spec_id"):
            cursor = await conn.execute(_SPEC, {"id": values["app_spec_id"]})
            spec = await cursor.fetchone()
            if spec is not None:
                source = SpecSource(*spec)
        row = await crud.insert_row_hot(conn, builds, decide(facts, source), BuildRow)
        distinct = list(dict.fromkeys(secrets))
        if distinct:
            async with conn.cursor() as cur:
                await cur.executemany(_SECRET, [(row.id, hashlib.sha256(v.encode()).digest(), v) for v in distinct])
        await conn.execute(_NOTIFY, {"payload": notify_payload(row)})
    return row


_INSERT_IF_OWNED: dict[tuple[str, ...], str] = {}


def _insert_if_owned_sql(columns: tuple[str, ...]) -> str:
    """INSERT ... SELECT the values WHERE the project is the user's, RETURNING
    the row, with pg_notify of the row in the same statement."""
    query = _INSERT_IF_OWNED.get(columns)
    if query is None:
        typed_values = ", ".join(f"CAST(%({name})s AS {crud.sql_type(builds, name)})" for name in columns)
        payload = " || ' ' || ".join(f"made.{c}::text" for c in ("id", "status", "last_log_seq", "last_event_seq"))
        query = _INSERT_IF_OWNED[columns] = (
            f"WITH made AS (INSERT INTO builds ({', '.join(columns)}) SELECT {typed_values} "
            "WHERE EXISTS (SELECT 1 FROM projects WHERE id = %(project_id)s AND user_id = %(user_id)s) "
            # The call's deadline, into PostgreSQL before the foreign keys'
            # row locks are waited for (as the append does, server.store.feeds).
            "AND set_config('lock_timeout', %(ms)s, true) IS NOT NULL "
            "AND set_config('statement_timeout', %(ms)s, true) IS NOT NULL "
            "RETURNING *) "
            f"SELECT made.* FROM made, LATERAL (SELECT pg_notify('{BUILD_CHANNEL}', {payload})) AS sent"
        )
    return query


async def _insert_if_owned(db: Database, values: Mapping[str, Any]) -> BuildRow | None:
    """The build inserted (and notified) in one statement when its project
    is its user's, else None and nothing written."""
    async with db.connection() as conn, conn.cursor(row_factory=class_row(BuildRow)) as cur:
        params = {**crud.hot_params(builds, values), "ms": str(db.deadline_ms())}
        await cur.execute(_insert_if_owned_sql(tuple(values)), params)
        return await cur.fetchone()


async def list_builds(
    db: Database,
    *,
    user_id: str,
    project_id: str,
    statuses: Collection[BuildStatus],
    limit: int,
    budget: int,
    after: tuple[datetime, str] | None,
) -> Page[BuildRow]:
    equal = {name: value for name, value in (("user_id", user_id), ("project_id", project_id)) if value}
    return await crud.newest_page_hot(
        db, builds, BuildRow, equal=equal, among={"status": [s.value for s in sorted(statuses)]},
        limit=limit, budget=budget, after=after,
    )


async def _locked(conn: AsyncConnection, key: str, expected_revision: int | None) -> BuildRow:
    current = await crud.must_get(conn, builds, key, "build", lock=True)
    crud.check_revision(current, expected_revision, "build")
    return typed(BuildRow, current)


async def update(
    db: Database,
    key: str,
    values: Mapping[str, Any],
    *,
    expected_revision: int | None,
    check: Callable[[BuildRow], None] | None = None,
) -> BuildRow:
    """Apply `values`; with `check`, first lock the row and let `check` refuse."""
    async with db.transaction() as conn:
        if check is not None:
            check(await _locked(conn, key, expected_revision))
        row = typed(BuildRow, await crud.update_row(
            conn, builds, key, values, resource="build", expected_revision=expected_revision
        ))
        await _notify(conn, row)
    return row


async def change_status(
    db: Database,
    key: str,
    decide: Callable[[BuildRow], StatusChange],
    *,
    expected_revision: int | None,
) -> BuildRow:
    """Write the status change `decide(current)` returns, under a row lock.

    The lock serialises concurrent moves of one build: the second waits for
    the first to commit, then decides from the status the first left, so two
    moves never both win and neither update is lost. `decide` raises
    InvalidTransition for a refused move, and nothing is written.
    """
    async with db.transaction() as conn:
        change = decide(await _locked(conn, key, expected_revision))
        values: dict[str, Any] = {
            "status": change.status, "update_time": change.update_time, "status_reason": change.status_reason,
        }
        if change.start_time is not None:
            values["start_time"] = change.start_time
        if change.finish_time is not None:
            values["finish_time"] = change.finish_time
        if change.reviews is not None:
            values["reviews"] = bindparam("reviews", change.reviews, type_=JSONB)
        row = typed(BuildRow, await crud.update_row(conn, builds, key, values, resource="build", expected_revision=None))
        if change.status in TERMINAL:
            # A finished build takes no more appends: nothing is left to mask,
            # so its secrets go, in the transaction that finishes it.
            await conn.execute(sqlalchemy.delete(build_secrets).where(build_secrets.c.build_id == key))
        await _notify(conn, row)
    return row


async def delete(db: Database, key: str, *, expected_revision: int | None) -> None:
    async with db.transaction() as conn:
        await crud.delete_row(conn, builds, key, resource="build", expected_revision=expected_revision)
