"""Initial schema: every entity of the seed, the build_status enum, the
per-build sequence counters and the keyset indexes.

Revision ID: 0001
Revises:
Create Date: 2026-11-25 06:19:36.995286
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0001'
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('users',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('clerk_id', sa.Text(), nullable=False),
    sa.Column('email', sa.Text(), nullable=False),
    sa.Column('name', sa.Text(), nullable=True),
    sa.Column('create_time', sa.DateTime(timezone=True), nullable=False),
    sa.Column('update_time', sa.DateTime(timezone=True), nullable=False),
    sa.Column('revision', sa.Integer(), server_default=sa.text('1'), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_users')),
    sa.UniqueConstraint('clerk_id', name=op.f('uq_users_clerk_id'))
    )
    op.create_index('ix_users_create_time_id', 'users', ['create_time', 'id'], unique=False)
    op.create_index(op.f('ix_users_email'), 'users', ['email'], unique=False)
    op.create_table('projects',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('user_id', sa.String(length=32), nullable=False),
    sa.Column('name', sa.Text(), nullable=False),
    sa.Column('description', sa.Text(), nullable=True),
    sa.Column('create_time', sa.DateTime(timezone=True), nullable=False),
    sa.Column('update_time', sa.DateTime(timezone=True), nullable=False),
    sa.Column('revision', sa.Integer(), server_default=sa.text('1'), nullable=False),
    sa.Column('last_app_spec_version', sa.Integer(), server_default=sa.text('0'), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_projects_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_projects'))
    )
    op.create_index('ix_projects_create_time_id', 'projects', ['create_time', 'id'], unique=False)
    op.create_index('ix_projects_user_id_create_time_id', 'projects', ['user_id', 'create_time', 'id'], unique=False)
    op.create_table('chat_sessions',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('user_id', sa.String(length=32), nullable=False),
    sa.Column('project_id', sa.String(length=32), nullable=True),
    sa.Column('title', sa.Text(), server_default=sa.text("''"), nullable=False),
    sa.Column('message_count', sa.BigInteger(), server_default=sa.text('0'), nullable=False),
    sa.Column('create_time', sa.DateTime(timezone=True), nullable=False),
    sa.Column('update_time', sa.DateTime(timezone=True), nullable=False),
    sa.Column('revision', sa.Integer(), server_default=sa.text('1'), nullable=False),
    sa.ForeignKeyConstraint(['project_id'], ['projects.id'], name=op.f('fk_chat_sessions_project_id_projects'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_chat_sessions_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_chat_sessions'))
    )
    op.create_index('ix_chat_sessions_create_time_id', 'chat_sessions', ['create_time', 'id'], unique=False)
    op.create_index(op.f('ix_chat_sessions_project_id'), 'chat_sessions', ['project_id'], unique=False)
    op.create_index('ix_chat_sessions_user_id_create_time_id', 'chat_sessions', ['user_id', 'create_time', 'id'], unique=False)
    op.create_table('app_specs',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('project_id', sa.String(length=32), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('content', sa.Text(), nullable=False),
    sa.Column('chat_session_id', sa.String(length=32), nullable=True),
    sa.Column('summary', sa.Text(), server_default=sa.text("''"), nullable=False),
    sa.Column('create_time', sa.DateTime(timezone=True), nullable=False),
    sa.Column('update_time', sa.DateTime(timezone=True), nullable=False),
    sa.Column('revision', sa.Integer(), server_default=sa.text('1'), nullable=False),
    sa.ForeignKeyConstraint(['chat_session_id'], ['chat_sessions.id'], name=op.f('fk_app_specs_chat_session_id_chat_sessions'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['project_id'], ['projects.id'], name=op.f('fk_app_specs_project_id_projects'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_app_specs')),
    sa.UniqueConstraint('project_id', 'version', name=op.f('uq_app_specs_project_id_version'))
    )
    op.create_index(op.f('ix_app_specs_chat_session_id'), 'app_specs', ['chat_session_id'], unique=False)
    op.create_index('ix_app_specs_create_time_id', 'app_specs', ['create_time', 'id'], unique=False)
    op.create_table('chat_messages',
    sa.Column('session_id', sa.String(length=32), nullable=False),
    sa.Column('seq', sa.BigInteger(), nullable=False),
    sa.Column('role', sa.Text(), nullable=False),
    sa.Column('content', sa.Text(), nullable=False),
    sa.Column('metadata', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('create_time', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("role IN ('user', 'assistant', 'system', 'tool')", name=op.f('ck_chat_messages_role')),
    sa.ForeignKeyConstraint(['session_id'], ['chat_sessions.id'], name=op.f('fk_chat_messages_session_id_chat_sessions'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('session_id', 'seq', name=op.f('pk_chat_messages'))
    )
    op.create_table('builds',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('user_id', sa.String(length=32), nullable=False),
    sa.Column('project_id', sa.String(length=32), nullable=False),
    sa.Column('status', sa.Enum('PENDING', 'INITIALIZING', 'RUNNING', 'PAUSED', 'AWAITING_DESIGN_REVIEW', 'AWAITING_FEATURE_REVIEW', 'COMPLETED', 'FAILED', 'CANCELLED', name='build_status'), server_default=sa.text("'PENDING'"), nullable=False),
    sa.Column('app_spec', sa.Text(), nullable=False),
    sa.Column('app_spec_id', sa.String(length=32), nullable=True),
    sa.Column('sandbox_id', sa.Text(), nullable=True),
    sa.Column('progress', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('output_url', sa.Text(), nullable=True),
    sa.Column('artifact_key', sa.Text(), nullable=True),
    sa.Column('create_time', sa.DateTime(timezone=True), nullable=False),
    sa.Column('update_time', sa.DateTime(timezone=True), nullable=False),
    sa.Column('start_time', sa.DateTime(timezone=True), nullable=True),
    sa.Column('finish_time', sa.DateTime(timezone=True), nullable=True),
    sa.Column('status_reason', sa.Text(), server_default=sa.text("''"), nullable=False),
    sa.Column('reviews', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'[]'"), nullable=False),
    sa.Column('revision', sa.Integer(), server_default=sa.text('1'), nullable=False),
    sa.Column('last_log_seq', sa.BigInteger(), server_default=sa.text('0'), nullable=False),
    sa.Column('last_event_seq', sa.BigInteger(), server_default=sa.text('0'), nullable=False),
    sa.ForeignKeyConstraint(['app_spec_id'], ['app_specs.id'], name=op.f('fk_builds_app_spec_id_app_specs'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['project_id'], ['projects.id'], name=op.f('fk_builds_project_id_projects'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_builds_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_builds'))
    )
    op.create_index(op.f('ix_builds_app_spec_id'), 'builds', ['app_spec_id'], unique=False)
    op.create_index('ix_builds_create_time_id', 'builds', ['create_time', 'id'], unique=False)
    op.create_index('ix_builds_project_id_create_time_id', 'builds', ['project_id', 'create_time', 'id'], unique=False)
    op.create_index('ix_builds_status_create_time_id', 'builds', ['status', 'create_time', 'id'], unique=False)
    op.create_index('ix_builds_user_id_create_time_id', 'builds', ['user_id', 'create_time', 'id'], unique=False)
    op.create_table('build_events',
    sa.Column('build_id', sa.String(length=32), nullable=False),
    sa.Column('seq', sa.BigInteger(), nullable=False),
    sa.Column('id', sa.BigInteger(), sa.Identity(always=True), nullable=False),
    sa.Column('type', sa.Text(), nullable=False),
    sa.Column('data', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('create_time', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['build_id'], ['builds.id'], name=op.f('fk_build_events_build_id_builds'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('build_id', 'seq', name=op.f('pk_build_events'))
    )
    op.create_table('build_logs',
    sa.Column('build_id', sa.String(length=32), nullable=False),
    sa.Column('seq', sa.BigInteger(), nullable=False),
    sa.Column('id', sa.BigInteger(), sa.Identity(always=True), nullable=False),
    sa.Column('level', sa.Text(), nullable=False),
    sa.Column('message', sa.Text(), nullable=False),
    sa.Column('metadata', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('create_time', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("level IN ('info', 'warn', 'error', 'tool')", name=op.f('ck_build_logs_level')),
    sa.ForeignKeyConstraint(['build_id'], ['builds.id'], name=op.f('fk_build_logs_build_id_builds'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('build_id', 'seq', name=op.f('pk_build_logs'))
    )


def downgrade() -> None:
    op.drop_table('build_logs')
    op.drop_table('build_events')
    op.drop_index('ix_builds_user_id_create_time_id', table_name='builds')
    op.drop_index('ix_builds_status_create_time_id', table_name='builds')
    op.drop_index('ix_builds_project_id_create_time_id', table_name='builds')
    op.drop_index('ix_builds_create_time_id', table_name='builds')
    op.drop_index(op.f('ix_builds_app_spec_id'), table_name='builds')
    op.drop_table('builds')
    op.drop_table('chat_messages')
    op.drop_index('ix_app_specs_create_time_id', table_name='app_specs')
    op.drop_index(op.f('ix_app_specs_chat_session_id'), table_name='app_specs')
    op.drop_table('app_specs')
    op.drop_index('ix_chat_sessions_user_id_create_time_id', table_name='chat_sessions')
    op.drop_index(op.f('ix_chat_sessions_project_id'), table_name='chat_sessions')
    op.drop_index('ix_chat_sessions_create_time_id', table_name='chat_sessions')
    op.drop_table('chat_sessions')
    op.drop_index('ix_projects_user_id_create_time_id', table_name='projects')
    op.drop_index('ix_projects_create_time_id', table_name='projects')
    op.drop_table('projects')
    op.drop_index(op.f('ix_users_email'), table_name='users')
    op.drop_index('ix_users_create_time_id', table_name='users')
    op.drop_table('users')
    # drop_table does not drop the enum type that create_table created.
    sa.Enum(name='build_status').drop(op.get_bind(), checkfirst=False)
