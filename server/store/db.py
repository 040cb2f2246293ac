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
Database errors become domain errors here, and nowhere else: `translate()`
is the one map, for both paths.

Every unit of work is bounded in time: waiting for a pooled connection by
DB_POOL_TIMEOUT_SECONDS, the whole unit by DB_TIMEOUT_SECONDS, and both by
the deadline of the call it serves (`call_deadline`, set by the rpc layer).
A database that is down, frozen or partitioned away therefore costs a call
a few seconds and an UNAVAILABLE, never a hang.

With metrics on, both pools report their connections (`pool_stats()`, read
by the health loop) and each unit of work the time it waited for its
connection; with tracing on, every pooled connection's cursor class is the
one given as `cursor_factory` (server.telemetry.tracing.TracedCursor), whose
statements are spans. SQLAlchemy runs on psycopg here, so that one hook
serves both pools.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import re
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import psycopg
import psycopg_pool
from psycopg import sql
from psycopg.rows import AsyncRowFactory
from sqlalchemy import event, exc
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from server.config import libpq_url, sqlalchemy_url
from server.domain.errors import Aborted, AlreadyExists, DomainError, NotFound

if TYPE_CHECKING:
    from server.telemetry.metrics import Metrics, PoolStats

log = logging.getLogger(__name__)

R = TypeVar("R")

# The monotonic time by which the current call must be answered, when the
# caller gave a deadline (set by the rpc layer for each call).
call_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("call_deadline", default=None)

# libpq options of every connection: a bounded connect, and TCP keepalives so
# that a peer that vanished without a reset (a partition) is noticed within
# seconds instead of the kernel's two hours. (Unix sockets ignore them.)
# Connections are named in pg_stat_activity: `buildplatform` (the pools),
# `buildplatform-listen` (LISTEN/NOTIFY), `buildplatform-health` (the probe).
CONNECT_OPTIONS: dict[str, Any] = {
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    "tcp_user_timeout": 15_000,
}

# constraint name -> (resource, field) for unique violations
_UNIQUE = {
    "uq_users_clerk_id": ("user", "clerk_id"),
    "uq_app_specs_project_id_version": ("app_spec", "version"),
    "uq_service_tokens_name": ("service token", "name"),
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
    "fk_agent_tokens_build_id_builds": ("build", "build_id"),
}
_KEY_VALUE = re.compile(r"Key \((?P<cols>[^)]*)\)=\((?P<value>.*)\)")



_GET_BY_ID: dict[str, sql.Composed] = {}


@asynccontextmanager
async def _pooled(
    pool: psycopg_pool.AsyncConnectionPool[psycopg.AsyncConnection[Any]], timeout: float,
    waited: Callable[[float], None] | None = None,
) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """A connection of `pool`, given back whatever happens to this task.

    psycopg_pool's own connection() gives it back in a `finally` that awaits
    (a rollback or a cancel of what was running, the pool's lock): a second
    cancellation of the call meanwhile (its time budget running out while a
    cut query is being cleaned up, the shutdown drain) would abort that and
    lose the connection for good, a pool shrinking by one each time until
    every call waits. The return runs shielded, in a task of its own.
    `waited` is told how long the wait for the connection took."""
    if waited is None:
        conn = await pool.getconn(timeout=timeout)
    else:
        began = time.perf_counter()
        conn = await pool.getconn(timeout=timeout)
        waited(time.perf_counter() - began)
    try:
        yield conn
    finally:
        await asyncio.shield(pool.putconn(conn))


class DatabaseUnavailable(Exception):
    """PostgreSQL could not be reached or did not answer in time: UNAVAILABLE,
    and the same call may succeed when retried. The message says what
    happened and what to do, in one line, and is sent to the caller."""


class DatabaseBusy(DatabaseUnavailable):
    """No pooled connection became free in time: this process is saturated."""


class DatabaseRejected(Exception):
    """PostgreSQL answered but refused us (credentials, a missing database):
    retrying will not help until the configuration changes."""


# What a server that answered but refused us says at connect time (psycopg
# gives no SQLSTATE for connection failures, only the server's message).
_REFUSALS = (
    ("password authentication failed", "the database rejected the credentials in DATABASE_URL"),
    ("role", "the database has no role of the name in DATABASE_URL: create it, or fix the URL"),
    ("pg_hba.conf", "the database refused the connection (pg_hba.conf): allow this host, or fix DATABASE_URL"),
    ("database", "the database named in DATABASE_URL does not exist: create it, or fix the URL"),
    ("permission denied", "the role in DATABASE_URL may not connect to that database"),
)


def unreachable(error: psycopg.OperationalError) -> str:
    """One line for a connection that failed without the server refusing it."""
    return f"the database is unreachable ({' '.join(str(error).split()) or type(error).__name__})"


def rejection(error: psycopg.OperationalError) -> str | None:
    """One line when the server refused the connection for good (retrying
    will not help), None when it could not be reached (worth waiting for)."""
    message = str(error)
    if "FATAL:" not in message:
        return None
    fatal = message.split("FATAL:", 1)[1].strip().splitlines()[0]
    for marker, line in _REFUSALS:
        if marker in fatal and ("does not exist" in fatal or marker not in ("role", "database")):
            return line
    return None


def translate(error: BaseException) -> BaseException:
    """Map a database error (SQLAlchemy's or psycopg's) to a domain error,
    DatabaseUnavailable, or the error itself when it is a bug."""
    if isinstance(error, exc.TimeoutError | psycopg_pool.PoolTimeout):  # a pool's wait ran out
        return DatabaseBusy("no database connection became free in time: the server is saturated; retry with backoff")
    orig: BaseException | None = error.orig if isinstance(error, exc.DBAPIError) else error
    if isinstance(error, exc.DBAPIError) and error.connection_invalidated:
        return DatabaseUnavailable("the database connection was lost; retry")
    if isinstance(orig, psycopg.errors.SerializationFailure | psycopg.errors.DeadlockDetected):
        # Before OperationalError, their base class: nothing is wrong with the
        # request, the resource or the database; the same call succeeds when
        # retried, which is ABORTED (google.rpc), not UNAVAILABLE.
        return Aborted(
            "a concurrent transaction conflicted with this one (serialization failure or deadlock); retry",
            metadata={"sqlstate": orig.sqlstate or ""},
        )
    if isinstance(orig, psycopg.errors.QueryCanceled):
        return DatabaseUnavailable("the database did not finish in time; retry later")
    if isinstance(orig, psycopg.errors.LockNotAvailable):
        return DatabaseUnavailable("the resource is locked by another change; retry")
    if isinstance(orig, psycopg.OperationalError | psycopg_pool.PoolClosed | OSError):
        return DatabaseUnavailable("the database is unreachable; retry later")
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
    return error


def session_timeouts(ms: int) -> str:
    """The statement giving a connection's statements `ms` milliseconds
    each, and its lock waits as long, until changed."""
    return f"SELECT set_config('statement_timeout', '{int(ms)}', false), set_config('lock_timeout', '{int(ms)}', false)"


def local_timeouts(ms: int) -> str:
    """The statement giving the rest of the current transaction `ms`
    milliseconds per statement and per lock wait (an int: nothing to quote)."""
    return f"SELECT set_config('statement_timeout', '{int(ms)}', true), set_config('lock_timeout', '{int(ms)}', true)"


@asynccontextmanager
async def hard_timeout(seconds: float) -> AsyncIterator[None]:
    """Raise TimeoutError when the block runs longer than `seconds`.

    Unlike asyncio.timeout this also gets out of psycopg: cancelled in the
    middle of a query, psycopg asks the server to cancel it and waits up to
    ten seconds for the answer, which never comes from a frozen server. A
    second cancellation a moment later makes psycopg close the connection
    and give up at once (the pool then discards it)."""
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    cancels = 0
    second: asyncio.TimerHandle | None = None

    def expire() -> None:
        nonlocal cancels, second
        cancels += 1
        task.cancel()
        if cancels == 1:
            second = loop.call_later(0.2, expire)

    first = loop.call_later(max(seconds, 0.0), expire)
    try:
        yield
    except asyncio.CancelledError:
        if not cancels:
            raise
        for _ in range(cancels):
            task.uncancel()
        raise TimeoutError from None
    else:
        # The block swallowed our cancellation and finished: keep the task's
        # cancellation count right for the timeouts of its callers.
        for _ in range(cancels):
            task.uncancel()
    finally:
        first.cancel()
        if second is not None:
            second.cancel()


@asynccontextmanager
async def _translated(budget: float, what: str) -> AsyncIterator[None]:
    """The block's database errors leave it as domain errors, and the block
    is cut at `budget` seconds."""
    try:
        async with hard_timeout(budget):
            yield
    except DomainError:
        raise
    except TimeoutError:
        raise DatabaseUnavailable(f"the database did not answer within {what}; retry later") from None
    except (exc.SQLAlchemyError, psycopg.Error, psycopg_pool.PoolTimeout, psycopg_pool.PoolClosed, OSError) as error:
        translated = translate(error)
        if translated is error:
            raise
        raise translated from error


class Database:
    def __init__(
        self,
        database_url: str,
        *,
        pool_size: int,
        max_overflow: int,
        pool_timeout: float = 2.0,
        timeout: float = 5.0,
        metrics: Metrics | None = None,
        cursor_factory: type[psycopg.AsyncCursor[Any]] | None = None,
    ) -> None:
        self.url = libpq_url(database_url)
        self.pool_size = pool_size
        self.max_overflow = max_overflow
        self.pool_timeout = pool_timeout
        self.timeout = timeout
        # Every statement of the pools is bounded by PostgreSQL itself too,
        # at DB_TIMEOUT_SECONDS: set once per new connection (free per call;
        # a SET rather than the `options` startup parameter, which PgBouncer
        # refuses); a call with a nearer deadline lowers both for its own
        # work (see transaction() and deadline_ms()).
        self.session_defaults = session_timeouts(max(1, round(timeout * 1000)))
        self.connect_options = {
            **CONNECT_OPTIONS, "connect_timeout": max(1, round(timeout)), "application_name": "buildplatform",
        }
        if cursor_factory is not None:
            self.connect_options["cursor_factory"] = cursor_factory
        self._waited_psycopg = self._waited_sqlalchemy = None
        if metrics is not None:
            self._waited_psycopg = metrics.pool_waits["psycopg"].observe
            self._waited_sqlalchemy = metrics.pool_waits["sqlalchemy"].observe
        self._sqlalchemy_waiting = 0   # checkouts in progress
        self.engine: AsyncEngine = self._engine()
        self._autocommit = self.engine.execution_options(isolation_level="AUTOCOMMIT")
        self.pool = self._pool()

    def _engine(self) -> AsyncEngine:
        engine = create_async_engine(
            sqlalchemy_url(self.url),
            pool_size=self.pool_size,
            max_overflow=self.max_overflow,
            pool_timeout=self.pool_timeout,
            pool_pre_ping=False,
            pool_recycle=1800,
            connect_args=self.connect_options,
        )
        defaults = self.session_defaults

        @event.listens_for(engine.sync_engine, "connect")
        def _timeouts(dbapi_connection: Any, _record: Any) -> None:
            # Outside any transaction, so that the pool's reset (a rollback) keeps it.
            autocommit = dbapi_connection.autocommit
            dbapi_connection.autocommit = True
            cursor = dbapi_connection.cursor()
            cursor.execute(defaults)
            cursor.close()
            dbapi_connection.autocommit = autocommit

        return engine

    async def _configure(self, conn: psycopg.AsyncConnection[Any]) -> None:
        await conn.execute(self.session_defaults)

    def _pool(self) -> psycopg_pool.AsyncConnectionPool[psycopg.AsyncConnection[Any]]:
        return psycopg_pool.AsyncConnectionPool(
            self.url,
            min_size=1,
            max_size=self.pool_size + self.max_overflow,
            kwargs={"autocommit": True, **self.connect_options},
            configure=self._configure,
            timeout=self.pool_timeout,
            reconnect_timeout=self.timeout,
            open=False,
            name="hot-path",
        )

    async def open(self) -> None:
        await self.pool.open(wait=False)

    async def recycle(self) -> None:
        """Replace every pooled connection: after an outage, the pools hold
        connections to a server that is gone, and psycopg_pool's reconnect
        back-off can wait longer than the outage lasted. Calls in flight
        finish on the old connections, which are closed when returned."""
        old_pool, old_engine = self.pool, self.engine
        self.pool = self._pool()
        await self.pool.open(wait=False)
        self.engine = self._engine()
        self._autocommit = self.engine.execution_options(isolation_level="AUTOCOMMIT")
        await old_engine.dispose()
        asyncio.get_running_loop().create_task(old_pool.close(timeout=self.timeout))

    def budget(self) -> tuple[float, str]:
        """Seconds the next unit of work may take, and how to name that limit."""
        deadline = call_deadline.get()
        if deadline is not None:
            left = deadline - time.monotonic()
            if left < self.timeout:
                return left, "the call's deadline"
        return self.timeout, f"{self.timeout:g}s (DB_TIMEOUT_SECONDS)"

    def deadline_ms(self) -> int:
        """The milliseconds PostgreSQL may spend on the next statement of the
        current call: the call's time left (at least 1: 0 would mean no
        limit), or DB_TIMEOUT_SECONDS. Sent as statement_timeout and
        lock_timeout, so that a statement still running, or a lock still
        waited for, when the caller's deadline passes is cut by PostgreSQL
        itself, and nothing the call wrote commits after its caller was told
        it failed: the cancellation the call's own task sends at its
        deadline may arrive late, or never (a closed connection does not
        stop a backend waiting for a lock)."""
        deadline = call_deadline.get()
        if deadline is not None:
            left = deadline - time.monotonic()
            if left < self.timeout:
                return max(1, int(left * 1000))
        return max(1, round(self.timeout * 1000))

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """A psycopg connection in autocommit mode, for the hot paths."""
        budget, what = self.budget()
        pool = self.pool
        try:
            async with (_translated(budget, what),
                        _pooled(pool, min(budget, self.pool_timeout), self._waited_psycopg) as conn):
                yield conn
        except DatabaseBusy:
            # The wait ran out with connections to spare: they could not be
            # made, so the database is down rather than the pool busy.
            if pool.get_stats().get("pool_size", 0) < pool.max_size:
                raise DatabaseUnavailable("the database is unreachable; retry later") from None
            raise

    async def get_by_id(self, table: str, key: str, row_factory: AsyncRowFactory[R]) -> R | None:
        """One row by primary key, built by `row_factory`: the hot read of every Get RPC."""
        query = _GET_BY_ID.get(table)
        if query is None:
            query = _GET_BY_ID[table] = sql.SQL("SELECT * FROM {} WHERE id = %s").format(sql.Identifier(table))
        async with self.connection() as conn, conn.cursor(row_factory=row_factory) as cur:
            await cur.execute(query, (key,))
            return await cur.fetchone()

    @asynccontextmanager
    async def hot_transaction(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """A transaction on the hot psycopg pool, for a write whose statements
        are fixed driver SQL (CreateBuild): it commits when the block ends
        normally and rolls back on any exception, and its statements get the
        call's time left as transaction()'s do. It spares the SQLAlchemy
        async transaction's greenlet hops and statement cache lookups
        (docs/benchmarks.md, "Unary calls: where the time went")."""
        budget, _ = self.budget()
        async with self.connection() as conn, conn.transaction():
            if budget < self.timeout:
                await conn.execute(local_timeouts(self.deadline_ms()))
            yield conn

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        budget, what = self.budget()
        async with _translated(budget, what), self._checkout(self.engine) as conn, conn.begin():
            if budget < self.timeout:
                # The call's deadline is nearer than the connection's
                # defaults: the transaction's statements get the time left
                # (one round trip, only for such calls).
                await conn.exec_driver_sql(local_timeouts(self.deadline_ms()))
            yield conn

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        budget, what = self.budget()
        async with _translated(budget, what), self._checkout(self._autocommit) as conn:
            yield conn

    @asynccontextmanager
    async def _checkout(self, engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
        """`engine.connect()`, with the wait for the connection counted and timed."""
        conn = engine.connect()
        self._sqlalchemy_waiting += 1
        began = time.perf_counter()
        try:
            await conn.start()
        finally:
            self._sqlalchemy_waiting -= 1
        if self._waited_sqlalchemy is not None:
            self._waited_sqlalchemy(time.perf_counter() - began)
        try:
            yield conn
        finally:
            await asyncio.shield(conn.close())

    def pool_stats(self) -> list[PoolStats]:
        """Both pools' connections now: in use, idle, waited for, at most."""
        from server.telemetry.metrics import PoolStats

        stats = self.pool.get_stats()
        size, idle = stats.get("pool_size", 0), stats.get("pool_available", 0)
        queue = self.engine.sync_engine.pool
        checked_out = getattr(queue, "checkedout", lambda: 0)()
        checked_in = getattr(queue, "checkedin", lambda: 0)()
        return [
            PoolStats("psycopg", size - idle, idle, stats.get("requests_waiting", 0), self.pool.max_size),
            PoolStats("sqlalchemy", checked_out, checked_in, self._sqlalchemy_waiting,
                      self.pool_size + self.max_overflow),
        ]

    async def close(self) -> None:
        await self.pool.close()
        await self.engine.dispose()


async def connect(url: str, *, timeout: float, name: str) -> psycopg.AsyncConnection[Any]:
    """A connection of its own (the health probe's, the LISTEN connection),
    outside the pools, named `name` in pg_stat_activity.application_name;
    DatabaseUnavailable or DatabaseRejected when it cannot."""
    options = {**CONNECT_OPTIONS, "connect_timeout": max(1, round(timeout)), "application_name": name}
    try:
        async with hard_timeout(timeout + 1):
            return await psycopg.AsyncConnection.connect(libpq_url(url), autocommit=True, **options)
    except TimeoutError:
        raise DatabaseUnavailable(f"the database did not accept a connection within {timeout:g}s") from None
    except psycopg.OperationalError as error:
        reason = rejection(error)
        if reason:
            raise DatabaseRejected(reason) from error
        raise DatabaseUnavailable(unreachable(error)) from error


async def ping(conn: psycopg.AsyncConnection[Any], *, timeout: float, query: str = "SELECT 1") -> Any:
    """One round trip on `conn` (`query`, whose one value it returns);
    DatabaseUnavailable when it does not come back."""
    try:
        async with hard_timeout(timeout):
            cursor = await conn.execute(query)
            row = await cursor.fetchone()
    except TimeoutError:
        raise DatabaseUnavailable(f"the database did not answer within {timeout:g}s") from None
    except (psycopg.Error, OSError) as error:
        raise DatabaseUnavailable("the database connection was lost") from error
    return None if row is None else row[0]


async def notification_queue_usage(conn: psycopg.AsyncConnection[Any], *, timeout: float) -> float:
    """ping() that also answers how full PostgreSQL's NOTIFY queue is (0 to 1):
    a listener that stops reading (anywhere on the server) fills it, and a
    full queue makes every notifying commit fail."""
    return float(await ping(conn, timeout=timeout, query="SELECT pg_notification_queue_usage()"))
