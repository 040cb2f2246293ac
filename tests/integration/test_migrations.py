"""Alembic migrations on a real PostgreSQL: up from empty, down to nothing, up again."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine

from server import migrate
from server.config import sqlalchemy_url
from server.store.models import Base
from server.store.partitions import include_name
from tests.support import create_database, drop_database

EXPECTED_TABLES = {
    "users", "projects", "builds", "build_logs", "build_events", "chat_sessions", "chat_messages", "app_specs",
    "service_tokens", "agent_tokens", "server_keys", "archive_chunks", "archive_claims", "archive_garbage",
}


@pytest.fixture
def empty_database(postgres: str) -> Iterator[str]:
    url = create_database(postgres, prefix="bp_migrate")
    yield url
    drop_database(postgres, url)


def schema(url: str) -> dict[str, set[str]]:
    """What the public schema holds, by kind."""
    with psycopg.connect(url, autocommit=True) as conn:
        def names(query: str) -> set[str]:
            return {row[0] for row in conn.execute(query).fetchall()}

        return {
            "tables": names(
                "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition"
            ),
            "partitions": names(
                "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = 'public' AND c.relispartition AND c.relkind = 'r'"
            ),
            "types": names(
                "SELECT t.typname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace "
                "WHERE n.nspname = 'public' AND t.typtype IN ('e', 'c', 'd') "
                "AND NOT EXISTS (SELECT 1 FROM pg_class c WHERE c.reltype = t.oid)"
            ),
            "sequences": names("SELECT sequencename FROM pg_sequences WHERE schemaname = 'public'"),
            "indexes": names("SELECT indexname FROM pg_indexes WHERE schemaname = 'public'"),
        }


def test_upgrade_from_empty_creates_every_table_and_the_status_enum(empty_database):
    assert migrate.schema_problem(empty_database) is not None
    migrate.upgrade(empty_database)
    created = schema(empty_database)
    assert EXPECTED_TABLES | {"alembic_version"} == created["tables"]
    assert "build_status" in created["types"]
    assert migrate.schema_problem(empty_database) is None


def test_the_migrated_schema_matches_the_models(empty_database):
    migrate.upgrade(empty_database)
    engine = create_engine(sqlalchemy_url(empty_database))
    try:
        with engine.connect() as connection:
            differences = compare_metadata(
                MigrationContext.configure(connection, opts={"include_name": include_name}), Base.metadata
            )
    finally:
        engine.dispose()
    assert differences == []


def test_downgrade_to_base_leaves_no_tables_types_or_sequences(empty_database):
    migrate.upgrade(empty_database)
    migrate.downgrade(empty_database, "base")
    left = schema(empty_database)
    assert left["tables"] <= {"alembic_version"}
    assert left["types"] == set()
    assert left["sequences"] == set()
    assert left["indexes"] <= {"alembic_version_pkc"}
    assert "none (empty database)" in (migrate.schema_problem(empty_database) or "")


def test_upgrade_after_downgrade_gives_the_same_schema(empty_database):
    migrate.upgrade(empty_database)
    first = schema(empty_database)
    migrate.downgrade(empty_database, "base")
    migrate.upgrade(empty_database)
    assert schema(empty_database) == first


def test_upgrade_twice_is_a_no_op(empty_database):
    migrate.upgrade(empty_database)
    first = schema(empty_database)
    migrate.upgrade(empty_database)
    assert schema(empty_database) == first


def test_downgrade_keeps_no_data_behind_and_upgrade_accepts_new_data(empty_database):
    migrate.upgrade(empty_database)
    with psycopg.connect(empty_database, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO users (id, clerk_id, email, create_time, update_time) "
            "VALUES ('c' || repeat('a', 24), 'k', 'a@example.com', now(), now())"
        )
    migrate.downgrade(empty_database, "base")
    migrate.upgrade(empty_database)
    with psycopg.connect(empty_database, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM users").fetchone()
    assert row == (0,)
