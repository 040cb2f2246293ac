"""Retention: a per-project log retention, and the queue of archive garbage.

- projects.log_retention_days: days a finished build's logs and events are
  kept; NULL means the server's LOG_RETENTION_DAYS. Adding a nullable column
  without a default rewrites nothing: instant on any size of table.
- archive_garbage: object prefixes (`builds/<id>/`) to delete from the
  archive. An AFTER DELETE ... FOR EACH STATEMENT trigger on builds fills it
  from the statement's transition table, so deleting a build, a project or a
  user (whose builds go by cascade) queues every deleted finished build's
  prefix in the same transaction as the delete: a build that is gone always
  has its objects queued, and one statement deleting 10,000 builds runs the
  trigger once. Builds that never finished are not queued: nothing archives
  a build before it finishes. `not_before` is the queue time plus an hour,
  so an archiving attempt that was uploading the build when it was deleted
  has ended (its lease is far shorter) before the prefix is listed; the
  janitor (server.archive.janitor) drains the queue.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)

# How long a deleted build's prefix waits before it is listed and emptied: longer
# than any archiving attempt's lease (server.archive), so no upload can follow it.
GARBAGE_DELAY = "1 hour"

QUEUE_FUNCTION = f"""
CREATE FUNCTION queue_archive_garbage() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO archive_garbage (prefix, build_id, queue_time, not_before)
    SELECT 'builds/' || gone.id || '/', gone.id, now(), now() + interval '{GARBAGE_DELAY}'
    FROM gone_builds AS gone
    WHERE gone.status IN ('COMPLETED', 'FAILED', 'CANCELLED')
    ON CONFLICT (prefix) DO NOTHING;
    RETURN NULL;
END
$$
"""

QUEUE_TRIGGER = """
CREATE TRIGGER builds_queue_archive_garbage
AFTER DELETE ON builds
REFERENCING OLD TABLE AS gone_builds
FOR EACH STATEMENT EXECUTE FUNCTION queue_archive_garbage()
"""


def upgrade() -> None:
    op.add_column("projects", sa.Column("log_retention_days", sa.Integer(), nullable=True))
    # NOT VALID then VALIDATE: the check scans the table under a lock that lets writes through.
    op.execute(
        "ALTER TABLE projects ADD CONSTRAINT ck_projects_log_retention_days "
        "CHECK (log_retention_days BETWEEN 1 AND 3650) NOT VALID"
    )
    op.execute("ALTER TABLE projects VALIDATE CONSTRAINT ck_projects_log_retention_days")
    op.create_table(
        "archive_garbage",
        sa.Column("prefix", sa.Text(), nullable=False),
        sa.Column("build_id", sa.String(length=32), nullable=False),
        sa.Column("queue_time", TS, nullable=False),
        sa.Column("not_before", TS, nullable=False),
        sa.PrimaryKeyConstraint("prefix", name="pk_archive_garbage"),
    )
    op.create_index("ix_archive_garbage_not_before", "archive_garbage", ["not_before"])
    # The janitor's expiry candidates, oldest first. CONCURRENTLY would need to
    # run outside the migration's transaction; builds is a table of build rows
    # (not lines), where the build of this index takes seconds at millions.
    op.create_index(
        "ix_builds_expiry_due", "builds", ["finish_time"],
        postgresql_where=sa.text("archive_state <> 'expired' AND status IN ('COMPLETED', 'FAILED', 'CANCELLED')"),
    )
    op.execute(QUEUE_FUNCTION)
    op.execute(QUEUE_TRIGGER)


def downgrade() -> None:
    op.execute("DROP TRIGGER builds_queue_archive_garbage ON builds")
    op.execute("DROP FUNCTION queue_archive_garbage()")
    op.drop_index("ix_builds_expiry_due", table_name="builds")
    op.drop_index("ix_archive_garbage_not_before", table_name="archive_garbage")
    op.drop_table("archive_garbage")
    op.execute("ALTER TABLE projects DROP CONSTRAINT ck_projects_log_retention_days")
    op.drop_column("projects", "log_retention_days")
