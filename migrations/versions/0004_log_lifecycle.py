"""Log lifecycle: tiers on builds, the archive's chunk index and claims, and
the hot log and event tables partitioned by build id.

- builds.archive_state ('hot', 'archived' or 'expired'), archive_time,
  expire_time: the tier of a build's logs and events, read by the same
  statement that reads its position.
- archive_chunks: one row per chunk of an archived build (docs/lifecycle.md).
- archive_claims: the archiver's claims, each with a lease that ends when its
  process stops renewing it, and the failures of the build's attempts so far
  (a failed build waits longer before its next attempt; server.archive.job).
- build_logs and build_events become RANGE partitioned by build_id: a build id
  is a cuid, so an id range is a creation-time window (server.store.partitions).
  The table as it was becomes the partition below the first window,
  `<table>_initial` (ATTACH: its rows are not copied, only scanned once to
  check the bound; the few rows of ids at or above the bound, which no cuid of
  the past makes, are moved first); `<table>_default` takes ids outside every
  window; the window of now and WINDOWS_AHEAD after it are created here, later
  ones by the janitor. The id column keeps one sequence for every partition
  (a sequence, not an identity column: attached tables and partitions of
  PostgreSQL before 17 cannot have one), continuing where the identity was.

Windows are HOT_PARTITION_SECONDS wide (read from the environment, default
3600) so the janitor's windows line up with these.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)
WINDOWS_AHEAD = 3
FINISHED = "('COMPLETED', 'FAILED', 'CANCELLED')"

# Fixed copies of server.store.partitions at the time of writing: a migration
# must not change when the code does.
_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"


def _base36(value: int) -> str:
    digits = ""
    while True:
        value, digit = divmod(value, 36)
        digits = _DIGITS[digit] + digits
        if value == 0:
            return digits


def _bound(time: datetime) -> str:
    return "c" + _base36(int(time.timestamp() * 1000)).rjust(8, "0")


def _window_name(table: str, start: datetime) -> str:
    return f"{table}_w{start:%Y%m%dt%H%M%S}"


# Per table: the filter column, its index, and the other columns in order.
TABLES = {
    "build_logs": (
        "level",
        "level text NOT NULL, message text NOT NULL, metadata jsonb, "
        "create_time timestamptz NOT NULL, wire_bytes integer NOT NULL",
        "CONSTRAINT ck_build_logs_level CHECK (level IN ('info', 'warn', 'error', 'tool')), ",
    ),
    "build_events": (
        "type",
        "type text NOT NULL, data jsonb NOT NULL, create_time timestamptz NOT NULL, wire_bytes integer NOT NULL",
        "",
    ),
}


def _window_seconds() -> int:
    value = int(os.environ.get("HOT_PARTITION_SECONDS") or 3600)
    if value < 60:
        raise ValueError("HOT_PARTITION_SECONDS must be at least 60")
    return value


def upgrade() -> None:
    op.add_column("builds", sa.Column("archive_state", sa.Text(), server_default=sa.text("'hot'"), nullable=False))
    op.add_column("builds", sa.Column("archive_time", TS, nullable=True))
    op.add_column("builds", sa.Column("expire_time", TS, nullable=True))
    op.create_check_constraint(
        "ck_builds_archive_state", "builds", "archive_state IN ('hot', 'archived', 'expired')"
    )
    # The archiver's due builds, oldest first (and the archive lag metric).
    op.create_index(
        "ix_builds_archive_due", "builds", ["finish_time"],
        postgresql_where=sa.text(f"archive_state = 'hot' AND status IN {FINISHED}"),
    )
    op.create_table(
        "archive_chunks",
        sa.Column("build_id", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("chunk", sa.Integer(), nullable=False),
        sa.Column("object_key", sa.Text(), nullable=False),
        sa.Column("byte_offset", sa.BigInteger(), nullable=False),
        sa.Column("byte_length", sa.Integer(), nullable=False),
        sa.Column("first_seq", sa.BigInteger(), nullable=False),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.Column("first_time", TS, nullable=False),
        sa.Column("last_time", TS, nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("raw_bytes", sa.Integer(), nullable=False),
        sa.Column("wire_bytes", sa.BigInteger(), nullable=False),
        sa.Column("crc32", sa.BigInteger(), nullable=False),
        sa.Column("value_names", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.Column("value_counts", postgresql.ARRAY(sa.Integer()), nullable=False),
        sa.CheckConstraint("kind IN ('log', 'event')", name="ck_archive_chunks_kind"),
        sa.ForeignKeyConstraint(
            ["build_id"], ["builds.id"], name="fk_archive_chunks_build_id_builds", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("build_id", "kind", "chunk", name="pk_archive_chunks"),
    )
    op.create_table(
        "archive_claims",
        sa.Column("build_id", sa.String(length=32), nullable=False),
        sa.Column("attempt", sa.Text(), nullable=False),
        sa.Column("claim_time", TS, nullable=False),
        sa.Column("lease_until", TS, nullable=False),
        sa.Column("failures", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.ForeignKeyConstraint(
            ["build_id"], ["builds.id"], name="fk_archive_claims_build_id_builds", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("build_id", name="pk_archive_claims"),
    )
    seconds = _window_seconds()
    now = datetime.now(UTC)
    epoch = int(now.timestamp())
    first = datetime.fromtimestamp(epoch - epoch % seconds, UTC)
    for table, (column, columns, checks) in TABLES.items():
        _partition(table, column, columns, checks, first, seconds)


def _partition(table: str, column: str, columns: str, checks: str, first: datetime, seconds: int) -> None:
    initial = f"{table}_initial"
    index = f"ix_{table}_build_id_{column}_seq"
    sequence = f"{table}_id_seq"
    op.execute(f"ALTER TABLE {table} RENAME TO {initial}")
    op.execute(f"ALTER INDEX pk_{table} RENAME TO pk_{initial}")
    op.execute(f"ALTER INDEX {index} RENAME TO ix_{initial}_build_id_{column}_seq")
    # One sequence for every partition, continuing the identity's.
    op.execute(f"ALTER SEQUENCE {sequence} RENAME TO {table}_id_seq_old")
    op.execute(f"CREATE SEQUENCE {sequence} AS bigint")
    op.execute(
        f"SELECT setval('{sequence}', last_value, is_called) FROM {table}_id_seq_old"
    )
    op.execute(f"ALTER TABLE {initial} ALTER COLUMN id DROP IDENTITY")   # drops the old sequence
    op.execute(
        f"CREATE TABLE {table} ("
        f"build_id varchar(32) NOT NULL, seq bigint NOT NULL, "
        f"id bigint NOT NULL DEFAULT nextval('{sequence}'), {columns}, "
        f"CONSTRAINT pk_{table} PRIMARY KEY (build_id, seq), {checks}"
        f"CONSTRAINT fk_{table}_build_id_builds FOREIGN KEY (build_id) REFERENCES builds (id) ON DELETE CASCADE"
        f") PARTITION BY RANGE (build_id)"
    )
    op.execute(f"ALTER SEQUENCE {sequence} OWNED BY {table}.id")
    op.execute(f"CREATE INDEX {index} ON {table} (build_id, {column}, seq)")
    op.execute(f"CREATE TABLE {table}_default PARTITION OF {table} DEFAULT")
    for i in range(WINDOWS_AHEAD + 1):
        start = first + timedelta(seconds=seconds * i)
        end = start + timedelta(seconds=seconds)
        op.execute(
            f"CREATE TABLE {_window_name(table, start)} PARTITION OF {table} "
            f"FOR VALUES FROM ('{_bound(start)}') TO ('{_bound(end)}')"
        )
    # Ids at or above the first bound (none that cuid made in the past) go
    # where they belong before the old table takes the range below it.
    low = _bound(first)
    op.execute(
        f"WITH moved AS (DELETE FROM {initial} WHERE build_id >= '{low}' RETURNING *) "
        f"INSERT INTO {table} SELECT * FROM moved"
    )
    op.execute(f"ALTER TABLE {table} ATTACH PARTITION {initial} FOR VALUES FROM (MINVALUE) TO ('{low}')")


def _unpartition(table: str, column: str, columns: str, checks: str) -> None:
    index = f"ix_{table}_build_id_{column}_seq"
    sequence = f"{table}_id_seq"
    old = f"{table}_partitioned"
    op.execute(f"ALTER TABLE {table} RENAME TO {old}")
    op.execute(f"ALTER INDEX pk_{table} RENAME TO pk_{old}")
    op.execute(f"ALTER INDEX {index} RENAME TO ix_{old}_build_id_{column}_seq")
    op.execute(f"ALTER SEQUENCE {sequence} RENAME TO {table}_id_seq_old")
    op.execute(
        f"CREATE TABLE {table} ("
        f"build_id varchar(32) NOT NULL, seq bigint NOT NULL, "
        f"id bigint GENERATED ALWAYS AS IDENTITY, {columns}, "
        f"CONSTRAINT pk_{table} PRIMARY KEY (build_id, seq), {checks}"
        f"CONSTRAINT fk_{table}_build_id_builds FOREIGN KEY (build_id) REFERENCES builds (id) ON DELETE CASCADE)"
    )
    op.execute(f"INSERT INTO {table} OVERRIDING SYSTEM VALUE SELECT * FROM {old}")
    op.execute(f"SELECT setval('{sequence}', last_value, is_called) FROM {table}_id_seq_old")
    op.execute(f"DROP TABLE {old}")   # its partitions and its sequence with it
    op.execute(f"CREATE INDEX {index} ON {table} (build_id, {column}, seq)")


def downgrade() -> None:
    for table, (column, columns, checks) in TABLES.items():
        _unpartition(table, column, columns, checks)
    op.drop_table("archive_claims")
    op.drop_table("archive_chunks")
    op.drop_index("ix_builds_archive_due", table_name="builds")
    op.drop_constraint("ck_builds_archive_state", "builds", type_="check")
    op.drop_column("builds", "expire_time")
    op.drop_column("builds", "archive_time")
    op.drop_column("builds", "archive_state")
