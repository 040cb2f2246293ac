"""Credentials and server keys.

- service_tokens: long-lived tokens of other backend services and
  operators, with scopes; only the SHA-256 of a token is kept.
- agent_tokens: per-build tokens of build agents, with an expiry; deleted
  with their build.
- server_keys: keys the replicas of one database share, made once (the
  page-token key when PAGE_TOKEN_SECRET is not set).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "service_tokens",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("token_hash", sa.LargeBinary(), nullable=False),
        sa.Column("scopes", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.Column("create_time", TS, server_default=sa.text("now()"), nullable=False),
        sa.Column("revoke_time", TS, nullable=True),
        sa.Column("last_used_time", TS, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_service_tokens"),
        sa.UniqueConstraint("name", name="uq_service_tokens_name"),
        sa.UniqueConstraint("token_hash", name="uq_service_tokens_token_hash"),
    )
    op.create_table(
        "agent_tokens",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("build_id", sa.String(length=32), nullable=False),
        sa.Column("token_hash", sa.LargeBinary(), nullable=False),
        sa.Column("create_time", TS, server_default=sa.text("now()"), nullable=False),
        sa.Column("expire_time", TS, nullable=False),
        sa.Column("revoke_time", TS, nullable=True),
        sa.ForeignKeyConstraint(
            ["build_id"], ["builds.id"], name="fk_agent_tokens_build_id_builds", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_agent_tokens"),
        sa.UniqueConstraint("token_hash", name="uq_agent_tokens_token_hash"),
    )
    op.create_index("ix_agent_tokens_build_id", "agent_tokens", ["build_id"])
    op.create_table(
        "server_keys",
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("create_time", TS, server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_server_keys"),
    )


def downgrade() -> None:
    op.drop_table("server_keys")
    op.drop_index("ix_agent_tokens_build_id", table_name="agent_tokens")
    op.drop_table("agent_tokens")
    op.drop_table("service_tokens")
