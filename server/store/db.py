"""The connection pool and the unit of work.

`transaction()` is the one place a write transaction opens: it commits when
the block ends normally and rolls back on any exception. `read()` runs
single-statement reads in autocommit mode: one round trip, no BEGIN/ROLLBACK.
Database errors become domain errors here, and nowhere else.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import psycopg
from sqlalchemy import exc, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from server.config import sqlalchemy_url
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

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        try:
            async with self.engine.begin() as conn:
                yield conn
        except DomainError:
            raise
        except exc.DBAPIError as error:
            raise translate(error) from error
        except OSError as error:
            raise DatabaseUnavailable(str(error)) from error

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        try:
            async with self._autocommit.connect() as conn:
                yield conn
        except DomainError:
            raise
        except exc.DBAPIError as error:
            raise translate(error) from error
        except OSError as error:
            raise DatabaseUnavailable(str(error)) from error

    async def ping(self) -> None:
        async with self.read() as conn:
            await conn.execute(text("SELECT 1"))

    async def close(self) -> None:
        await self.engine.dispose()
