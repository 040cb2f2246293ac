"""The connection pools and the unit of work.

Two pools, each for what it is best at (measured in docs/benchmarks.md):
- SQLAlchemy's engine, for CRUD writes and filtered lists built with
  SQLAlchemy Core. `transaction()` is the one place such a write transaction
  opens: it commits when the block ends normally and rolls back on any
  exception. `read()` runs single-statement reads in autocommit mode.
- a psycopg_pool of autocommit connections, for the hot paths: get-by-id
  reads and the log/event feeds (appends by COPY, followers' reads). Going
  through SQLAlchemy's connection checkout and execution costs about three
  times the CPU of a plain psycopg call per query, which the hottest
  RPCs cannot afford. `connection()` hands one out; a transaction on it is
  opened explicitly with `conn.transaction()`.
Database errors become domain errors here, and nowhere else.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg
import psycopg_pool
from psycopg import sql
from psycopg.rows import dict_row
from sqlalchemy import exc, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from server.config import libpq_url, sqlalchemy_url
from server.domain.errors import AlreadyExists, DomainError, FailedPrecondition, NotFound

# constraint name -> (resource, field) for unique violations
_UNIQUE = {
    "uq_users_clerk_id": ("user", "clerk_id"),
    "uq_app_specs_project_id_version": ("app_spec", "version"),
}
# constraint name -> (missing resource, field) for foreign-key violations
_FOREIGN = {
    "fk_projects_user_id_users": ("user", "user_id"),
    "fk_builds_user_id_users": ("user", "user_id"),
    "fk_builds_project_id_projects": ("project", "project_id"),
    "fk_builds_app_spec_id_app_specs": ("app spec", "app_spec_id"),
    "fk_chat_sessions_user_id_users": ("user", "user_id"),
    "fk_chat_sessions_project_id_projects": ("project", "project_id"),
    "fk_app_specs_project_id_projects": ("project", "project_id"),
    "fk_app_specs_chat_session_id_chat_sessions": ("chat session", "chat_session_id"),
}
_KEY_VALUE = re.compile(r"Key \((?P<cols>[^)]*)\)=\((?P<value>.*)\)")


_GET_BY_ID: dict[str, sql.Composed] = {}


class DatabaseUnavailable(Exception):
    """PostgreSQL could not be reached; the rpc layer answers UNAVAILABLE."""


def translate(error: exc.DBAPIError) -> Exception:
    """Map a database error to a domain error (or DatabaseUnavailable)."""
    orig = error.orig
    if isinstance(orig, psycopg.OperationalError) or error.connection_invalidated:
        return DatabaseUnavailable(str(orig).strip())
    if not isinstance(orig, psycopg.Error) or orig.diag is None:
        return error
    constraint = orig.diag.constraint_name or ""
    match = _KEY_VALUE.search(orig.diag.message_detail or "")
    value = match.group("value") if match else ""
    if orig.sqlstate == "23505" and constraint in _UNIQUE:
        resource, field = _UNIQUE[constraint]
        return AlreadyExists(resource, field, value)
    if orig.sqlstate == "23503" and constraint in _FOREIGN:
        resource, field = _FOREIGN[constraint]
        return NotFound(resource, value, field=field)
    if orig.sqlstate == "40001" or orig.sqlstate == "40P01":
        return FailedPrecondition(
            "a concurrent transaction conflicted with this one; retry", reason="CONFLICT"
        )
    return error


@asynccontextmanager
async def _translated() -> AsyncIterator[None]:
    """Database errors raised inside the block leave it as domain errors."""
    try:
        yield
    except DomainError:
        raise
    except exc.DBAPIError as error:
        raise translate(error) from error
    except OSError as error:
        raise DatabaseUnavailable(str(error)) from error


class Database:
    def __init__(self, database_url: str, *, pool_size: int, max_overflow: int) -> None:
        self.engine: AsyncEngine = create_async_engine(
            sqlalchemy_url(database_url),
            pool_size=pool_size,
            max_overflow=max_overflow,
            pool_pre_ping=False,
            pool_recycle=1800,
        )
        self._autocommit = self.engine.execution_options(isolation_level="AUTOCOMMIT")
        self.pool: psycopg_pool.AsyncConnectionPool[psycopg.AsyncConnection[Any]] = (
            psycopg_pool.AsyncConnectionPool(
                libpq_url(database_url),
                min_size=1,
                max_size=pool_size + max_overflow,
                kwargs={"autocommit": True},
                open=False,
                name="hot-path",
            )
        )

    async def open(self) -> None:
        await self.pool.open(wait=False)

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """A psycopg connection in autocommit mode, for the hot paths."""
        try:
            async with self.pool.connection() as conn:
                yield conn
        except DomainError:
            raise
        except (psycopg.OperationalError, psycopg_pool.PoolTimeout, OSError) as error:
            raise DatabaseUnavailable(str(error).strip()) from error

    async def get_by_id(self, table: str, key: str) -> dict[str, Any] | None:
        """One row by primary key, as a dict: the hot read of every Get RPC."""
        query = _GET_BY_ID.get(table)
        if query is None:
            query = _GET_BY_ID[table] = sql.SQL("SELECT * FROM {} WHERE id = %s").format(sql.Identifier(table))
        async with self.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(query, (key,))
            return await cur.fetchone()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        async with _translated(), self.engine.begin() as conn:
            yield conn

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        async with _translated(), self._autocommit.connect() as conn:
            yield conn

    async def ping(self) -> None:
        async with self.read() as conn:
            await conn.execute(text("SELECT 1"))

    async def close(self) -> None:
        await self.pool.close()
        await self.engine.dispose()
