"""Log steps: build_logs.step, the LogStep a line opens or closes.

A nullable jsonb column ({"id", "name"?, "action": "start"|"end"}), NULL for
an ordinary line: adding it to the partitioned parent adds it to every
partition, and a nullable column without a default is a catalog change only
(no rewrite, no scan), however many rows the partitions hold.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("build_logs", sa.Column("step", postgresql.JSONB(), nullable=True))


def downgrade() -> None:
    op.drop_column("build_logs", "step")
