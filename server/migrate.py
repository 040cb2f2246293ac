"""Alembic, driven from the server: upgrade to head, and the start-up check."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine

from server.config import sqlalchemy_url

ROOT = Path(__file__).resolve().parent.parent


def alembic_config(database_url: str) -> Config:
    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "migrations"))
    config.attributes["database_url"] = database_url
    return config


def _with_connection(database_url: str, action: str, revision: str) -> None:
    config = alembic_config(database_url)
    engine = create_engine(sqlalchemy_url(database_url))
    try:
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            getattr(command, action)(config, revision)
    finally:
        engine.dispose()


def upgrade(database_url: str, revision: str = "head") -> None:
    _with_connection(database_url, "upgrade", revision)


def downgrade(database_url: str, revision: str = "base") -> None:
    _with_connection(database_url, "downgrade", revision)


def schema_problem(database_url: str) -> str | None:
    """None when the database is at the newest migration, else what to do."""
    head = ScriptDirectory.from_config(alembic_config(database_url)).get_current_head()
    engine = create_engine(sqlalchemy_url(database_url))
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
