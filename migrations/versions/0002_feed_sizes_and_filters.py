"""Feeds bounded in bytes, and filters with bounded work.

- build_logs.wire_bytes / build_events.wire_bytes: an upper bound of the row's
  size as an element of a response's repeated field, written by every append.
  Reads cut in SQL on a running sum of it, so a read of big lines brings at
  most about one response's worth of rows out of PostgreSQL.
- (build_id, level, seq) / (build_id, type, seq): a filtered read or tail
  walks only the rows of the wanted levels/types, in seq order, whatever the
  length of the log.
- builds.last_log_time / last_event_time: the create_time of the newest
  row, kept under the build's row lock so that create_time never decreases
  with seq; since_time is then a binary search over seq.

Rows written before this migration get a bound computed from their text
(JSON is at most 6 times smaller than its protobuf Struct encoding, see
server.store.feeds.WIRE_BOUND_SQL); only unfinished builds need a last time.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Fixed copies of server.store.feeds' bounds at the time of writing: a
# migration must not change when the code does.
SERVER_FIELDS = 96
LOG_BOUND = f"{SERVER_FIELDS} + 8 + octet_length(message) + 6 * coalesce(octet_length(metadata::text), 0)"
EVENT_BOUND = f"{SERVER_FIELDS} + 8 + octet_length(type) + 6 * octet_length(data::text)"
UNFINISHED = "status NOT IN ('COMPLETED', 'FAILED', 'CANCELLED')"


def upgrade() -> None:
    for table, bound in (("build_logs", LOG_BOUND), ("build_events", EVENT_BOUND)):
        op.add_column(table, sa.Column("wire_bytes", sa.Integer(), nullable=True))
        op.execute(f"UPDATE {table} SET wire_bytes = {bound}")
        op.alter_column(table, "wire_bytes", nullable=False)
    op.create_index("ix_build_logs_build_id_level_seq", "build_logs", ["build_id", "level", "seq"])
    op.create_index("ix_build_events_build_id_type_seq", "build_events", ["build_id", "type", "seq"])
    op.add_column("builds", sa.Column("last_log_time", sa.DateTime(timezone=True), nullable=True))
    op.add_column("builds", sa.Column("last_event_time", sa.DateTime(timezone=True), nullable=True))
    # Finished builds take no more rows: only the others need their last time.
    for column, table in (("last_log_time", "build_logs"), ("last_event_time", "build_events")):
        op.execute(
            f"UPDATE builds SET {column} = (SELECT max(create_time) FROM {table} WHERE build_id = builds.id) "
            f"WHERE {UNFINISHED}"
        )


def downgrade() -> None:
    op.drop_column("builds", "last_event_time")
    op.drop_column("builds", "last_log_time")
    op.drop_index("ix_build_events_build_id_type_seq", table_name="build_events")
    op.drop_index("ix_build_logs_build_id_level_seq", table_name="build_logs")
    op.drop_column("build_events", "wire_bytes")
    op.drop_column("build_logs", "wire_bytes")
