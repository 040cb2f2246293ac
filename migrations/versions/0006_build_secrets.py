"""Secret values a build's logs and events mask (docs/secrets.md).

- build_secrets: the values registered for a build (CreateBuild,
  RegisterBuildSecrets), kept only while the build can append: the status
  change that finishes the build deletes them in its transaction. Keyed by
  the value's SHA-256 (a value may be longer than a btree entry can hold).
- builds.secrets_version: moved by every registration; an append names the
  version its masker was made from and is refused (then re-masked) when it
  is stale, so every replica masks with the current set.
- builds.mask_shapes: false when CreateBuild turned the masking of
  well-known token shapes off.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("builds", sa.Column("secrets_version", sa.Integer(), server_default=sa.text("0"), nullable=False))
    op.add_column("builds", sa.Column("mask_shapes", sa.Boolean(), server_default=sa.text("true"), nullable=False))
    op.create_table(
        "build_secrets",
        sa.Column("build_id", sa.String(length=32), nullable=False),
        sa.Column("value_hash", sa.LargeBinary(), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["build_id"], ["builds.id"], name="fk_build_secrets_build_id_builds", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("build_id", "value_hash", name="pk_build_secrets"),
    )


def downgrade() -> None:
    op.drop_table("build_secrets")
    op.drop_column("builds", "mask_shapes")
    op.drop_column("builds", "secrets_version")
