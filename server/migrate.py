"""Alembic, driven from the server: upgrade to head, and the start-up check."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine

from server.config import sqlalchemy_url

ROOT = Path(__file__).resolve().parent.parent
log = logging.getLogger("server.lifecycle")


def alembic_config(database_url: str) -> Config:
    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "migrations"))
    config.attributes["database_url"] = database_url
    return config


def _with_connection(database_url: str, action: str, revision: str) -> None:
    config = alembic_config(database_url)
    engine = create_engine(sqlalchemy_url(database_url), connect_args={"connect_timeout": 5})
    try:
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            before = MigrationContext.configure(connection).get_current_revision()
            getattr(command, action)(config, revision)
            after = MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()
    if before != after:   # one line; Alembic's own (a line per migration) are at DEBUG
        log.info("database schema %s from %s to %s", "upgraded" if action == "upgrade" else "downgraded",
                 before or "none (empty database)", after or "none")


def upgrade(database_url: str, revision: str = "head") -> None:
    _with_connection(database_url, "upgrade", revision)


def downgrade(database_url: str, revision: str = "base") -> None:
    _with_connection(database_url, "downgrade", revision)


def schema_problem(database_url: str) -> str | None:
    """None when the database is at the newest migration, else what to do."""
    head = ScriptDirectory.from_config(alembic_config(database_url)).get_current_head()
    engine = create_engine(sqlalchemy_url(database_url), connect_args={"connect_timeout": 5})
    try:
        with engine.connect() as connection:
            current = MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()
    if current == head:
        return None
    return (
        f"the database schema is at revision {current or 'none (empty database)'}, "
        f"this server needs {head}: run `python -m server --migrate` "
        f"(or `make run`, or `.venv/bin/alembic upgrade head`)"
    )


# Exit codes of `python -m server.migrate`, read by `python -m server`.
SCHEMA_NOT_AT_HEAD = 3
DATABASE_UNREACHABLE = 4   # try again later
DATABASE_REJECTED = 5      # credentials or database name: fix the configuration

def _connection_problem(error: BaseException) -> tuple[int, str] | None:
    """(exit code, one line) when `error` says the database cannot be used."""
    import psycopg
    from sqlalchemy import exc

    from server.store.db import rejection, unreachable

    orig = error.orig if isinstance(error, exc.DBAPIError) else error
    if not isinstance(orig, psycopg.OperationalError):
        return None
    reason = rejection(orig)
    if reason:
        return DATABASE_REJECTED, reason
    return DATABASE_UNREACHABLE, unreachable(orig)


def main(argv: list[str]) -> int:
    """`python -m server.migrate upgrade|check`, against DATABASE_URL.

    `python -m server` runs this in a child process so that the serving
    process never imports Alembic (about 8 MB of resident memory that every
    replica would carry for nothing). `check` prints what is wrong and exits
    with SCHEMA_NOT_AT_HEAD when the schema is not at the newest migration.
    """
    from server import logs

    logs.configure(os.environ.get("LOG_LEVEL", "INFO"))
    url = os.environ["DATABASE_URL"]
    action = argv[0] if argv else "check"
    if action not in ("upgrade", "check"):
        print(f"usage: python -m server.migrate upgrade|check (got {action!r})", file=sys.stderr)
        return 2
    try:
        if action == "upgrade":
            upgrade(url)
            return 0
        problem = schema_problem(url)
    except Exception as error:
        found = _connection_problem(error)
        if found is None:
            raise
        return _answer(found[1], found[0])
    if problem:
        return _answer(problem, SCHEMA_NOT_AT_HEAD)
    return 0


def _answer(line: str, code: int) -> int:
    """Print the one line `python -m server` reads; `code`. When that
    process is gone (stopped while it waited for us), there is nobody to
    tell: exit with the code, without a BrokenPipeError traceback."""
    try:
        print(line, flush=True)
    except BrokenPipeError:
        # Python flushes stdout again at exit: point it at nothing.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
