"""The schema, as SQLAlchemy 2 typed models. Alembic migrations create it.

Differences from the seed (database-schema.md), each for a reason:
- Columns are snake_case (clerk_id, create_time); the wire names match.
- The seed's single-column indexes on builds (user_id, status, created_at)
  are composite here, (column, create_time, id): they serve the same
  filters and also the newest-first keyset order of ListBuilds, so a page is
  one index range scan instead of a sort.
- build_logs and build_events are keyed by (build_id, seq), which is also
  the seed's build_id index; `seq` comes from the counter on the build row.
  A second index, (build_id, level|type, seq), serves filters; wire_bytes
  bounds reads in bytes (docs/streaming.md).
- revision counts the writes of a row; its etag is derived from it.
- Every foreign key cascades as documented in the protos.
- build_logs and build_events are RANGE partitioned by build_id in
  creation-time windows (migration 0004, server.store.partitions); their id
  comes from one sequence shared by every partition (a default, not an
  identity column, which attached partitions cannot have).
- builds.archive_state is the tier of a build's logs and events; its chunks
  are indexed in archive_chunks, and archive_claims holds the archiver's
  leases (server.archive.job).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Enum,
    ForeignKey,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from server.domain.limits import MAX_RETENTION_DAYS, MIN_RETENTION_DAYS
from server.domain.status import BuildStatus

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

LOG_LEVELS = ("info", "warn", "error", "tool")
CHAT_ROLES = ("user", "assistant", "system", "tool")
ARCHIVE_STATES = ("hot", "archived", "expired")
ARCHIVE_KINDS = ("log", "event")
FINISHED_STATUSES = ("COMPLETED", "FAILED", "CANCELLED")

ID = String(32)
TS = DateTime(timezone=True)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class User(Base):
    __tablename__ = "users"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    clerk_id: Mapped[str] = mapped_column(Text, unique=True)
    email: Mapped[str] = mapped_column(Text, index=True)
    name: Mapped[str | None] = mapped_column(Text)
    create_time: Mapped[datetime] = mapped_column(TS)
    update_time: Mapped[datetime] = mapped_column(TS)
    revision: Mapped[int] = mapped_column(Integer, server_default=text("1"))

    __table_args__ = (Index("ix_users_create_time_id", "create_time", "id"),)


class Project(Base):
    __tablename__ = "projects"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(Text)
    description: Mapped[str | None] = mapped_column(Text)
    create_time: Mapped[datetime] = mapped_column(TS)
    update_time: Mapped[datetime] = mapped_column(TS)
    revision: Mapped[int] = mapped_column(Integer, server_default=text("1"))
    # Counter of app spec versions: the next CreateAppSpec takes this + 1.
    last_app_spec_version: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    # Days a finished build's logs and events are kept; NULL: the server's
    # LOG_RETENTION_DAYS (server.archive.janitor).
    log_retention_days: Mapped[int | None] = mapped_column(Integer)

    __table_args__ = (
        CheckConstraint(
            f"log_retention_days BETWEEN {MIN_RETENTION_DAYS} AND {MAX_RETENTION_DAYS}", name="log_retention_days"
        ),
        Index("ix_projects_user_id_create_time_id", "user_id", "create_time", "id"),
        Index("ix_projects_create_time_id", "create_time", "id"),
    )


class AppSpec(Base):
    __tablename__ = "app_specs"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    content: Mapped[str] = mapped_column(Text)
    chat_session_id: Mapped[str | None] = mapped_column(
        ForeignKey("chat_sessions.id", ondelete="SET NULL"), index=True
    )
    summary: Mapped[str] = mapped_column(Text, server_default=text("''"))
    create_time: Mapped[datetime] = mapped_column(TS)
    update_time: Mapped[datetime] = mapped_column(TS)
    revision: Mapped[int] = mapped_column(Integer, server_default=text("1"))

    __table_args__ = (
        UniqueConstraint("project_id", "version"),
        Index("ix_app_specs_create_time_id", "create_time", "id"),
    )


class Build(Base):
    __tablename__ = "builds"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    status: Mapped[BuildStatus] = mapped_column(
        Enum(BuildStatus, name="build_status", values_callable=lambda e: [m.value for m in e]),
        server_default=text("'PENDING'"),
    )
    app_spec: Mapped[str] = mapped_column(Text)
    app_spec_id: Mapped[str | None] = mapped_column(
        ForeignKey("app_specs.id", ondelete="SET NULL"), index=True
    )
    sandbox_id: Mapped[str | None] = mapped_column(Text)
    progress: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    output_url: Mapped[str | None] = mapped_column(Text)
    artifact_key: Mapped[str | None] = mapped_column(Text)
    create_time: Mapped[datetime] = mapped_column(TS)
    update_time: Mapped[datetime] = mapped_column(TS)
    start_time: Mapped[datetime | None] = mapped_column(TS)
    finish_time: Mapped[datetime | None] = mapped_column(TS)
    status_reason: Mapped[str] = mapped_column(Text, server_default=text("''"))
    # Review history, oldest first: a small append-only list read with the row.
    reviews: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, server_default=text("'[]'"))
    revision: Mapped[int] = mapped_column(Integer, server_default=text("1"))
    # Per-build sequence counters. An append bumps one inside its own
    # transaction, which serialises the appends of one build: sequence order
    # is commit order, so readers can resume with `seq > cursor` safely.
    last_log_seq: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    last_event_seq: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    # create_time of the newest log/event, moved forward under the same row
    # lock: create_time never decreases with seq, so since_time is a binary
    # search over seq (server.store.feeds.since_cursor). NULL before the first.
    last_log_time: Mapped[datetime | None] = mapped_column(TS)
    last_event_time: Mapped[datetime | None] = mapped_column(TS)
    # Masking (server.domain.secrets): moved by every registration of secret
    # values, checked by every append (server.store.feeds); and whether
    # well-known token shapes are masked.
    secrets_version: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    mask_shapes: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))
    # The tier of the build's logs and events: 'hot' (rows in build_logs and
    # build_events), 'archived' (chunks in archive_chunks; archive_time when)
    # or 'expired' (gone; expire_time when).
    archive_state: Mapped[str] = mapped_column(Text, server_default=text("'hot'"))
    archive_time: Mapped[datetime | None] = mapped_column(TS)
    expire_time: Mapped[datetime | None] = mapped_column(TS)

    __table_args__ = (
        Index("ix_builds_user_id_create_time_id", "user_id", "create_time", "id"),
        Index("ix_builds_project_id_create_time_id", "project_id", "create_time", "id"),
        Index("ix_builds_status_create_time_id", "status", "create_time", "id"),
        Index("ix_builds_create_time_id", "create_time", "id"),
        CheckConstraint(f"archive_state IN {ARCHIVE_STATES!r}", name="archive_state"),
        # The archiver's due builds, oldest first (and the archive lag metric).
        Index(
            "ix_builds_archive_due", "finish_time",
            postgresql_where=text(f"archive_state = 'hot' AND status IN {FINISHED_STATUSES!r}"),
        ),
        # The janitor's candidates for expiry, oldest first (migration 0005).
        Index(
            "ix_builds_expiry_due", "finish_time",
            postgresql_where=text(f"archive_state <> 'expired' AND status IN {FINISHED_STATUSES!r}"),
        ),
    )


class BuildLog(Base):
    __tablename__ = "build_logs"

    build_id: Mapped[str] = mapped_column(
        ForeignKey("builds.id", ondelete="CASCADE"), primary_key=True
    )
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    id: Mapped[int] = mapped_column(BigInteger, server_default=text("nextval('build_logs_id_seq')"))
    level: Mapped[str] = mapped_column(Text)
    message: Mapped[str] = mapped_column(Text)
    metadata_: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSONB)
    # The LogStep the line opens or closes ({"id", "name"?, "action":
    # "start"|"end"}), NULL for an ordinary line (migration 0007).
    step: Mapped[dict[str, str] | None] = mapped_column(JSONB)
    create_time: Mapped[datetime] = mapped_column(TS)
    # An upper bound of the row's size in a response (server.store.feeds):
    # reads cut on its running sum, so big lines are read a page at a time.
    wire_bytes: Mapped[int] = mapped_column(Integer)

    __table_args__ = (
        CheckConstraint(f"level IN {LOG_LEVELS!r}", name="level"),
        # Filtered reads and tails walk only the wanted levels, in seq order.
        Index("ix_build_logs_build_id_level_seq", "build_id", "level", "seq"),
        {"postgresql_partition_by": "RANGE (build_id)"},
    )


class BuildEvent(Base):
    __tablename__ = "build_events"

    build_id: Mapped[str] = mapped_column(
        ForeignKey("builds.id", ondelete="CASCADE"), primary_key=True
    )
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    id: Mapped[int] = mapped_column(BigInteger, server_default=text("nextval('build_events_id_seq')"))
    type: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any]] = mapped_column(JSONB)
    create_time: Mapped[datetime] = mapped_column(TS)
    wire_bytes: Mapped[int] = mapped_column(Integer)

    __table_args__ = (
        Index("ix_build_events_build_id_type_seq", "build_id", "type", "seq"),
        {"postgresql_partition_by": "RANGE (build_id)"},
    )


class ArchiveChunk(Base):
    """One chunk of an archived build's logs or events: a byte range of the
    object `object_key` (one zstd frame), what it holds and its checksum."""

    __tablename__ = "archive_chunks"

    build_id: Mapped[str] = mapped_column(ForeignKey("builds.id", ondelete="CASCADE"), primary_key=True)
    kind: Mapped[str] = mapped_column(Text, primary_key=True)   # 'log' or 'event'
    chunk: Mapped[int] = mapped_column(Integer, primary_key=True)   # 0, 1, 2, ... in seq order
    object_key: Mapped[str] = mapped_column(Text)
    byte_offset: Mapped[int] = mapped_column(BigInteger)
    byte_length: Mapped[int] = mapped_column(Integer)   # compressed bytes in the object
    first_seq: Mapped[int] = mapped_column(BigInteger)
    last_seq: Mapped[int] = mapped_column(BigInteger)
    first_time: Mapped[datetime] = mapped_column(TS)
    last_time: Mapped[datetime] = mapped_column(TS)
    count: Mapped[int] = mapped_column(Integer)
    raw_bytes: Mapped[int] = mapped_column(Integer)   # the uncompressed frame
    wire_bytes: Mapped[int] = mapped_column(BigInteger)   # sum of the records' wire sizes
    crc32: Mapped[int] = mapped_column(BigInteger)   # zlib.crc32 of the stored bytes
    # The levels / event types the chunk holds and how many of each.
    value_names: Mapped[list[str]] = mapped_column(ARRAY(Text))
    value_counts: Mapped[list[int]] = mapped_column(ARRAY(Integer))

    __table_args__ = (CheckConstraint(f"kind IN {ARCHIVE_KINDS!r}", name="kind"),)


class ArchiveClaim(Base):
    """A build being archived: by which attempt, until when (the lease,
    renewed while the attempt works; server.archive.job)."""

    __tablename__ = "archive_claims"

    build_id: Mapped[str] = mapped_column(ForeignKey("builds.id", ondelete="CASCADE"), primary_key=True)
    attempt: Mapped[str] = mapped_column(Text)
    claim_time: Mapped[datetime] = mapped_column(TS)
    lease_until: Mapped[datetime] = mapped_column(TS)
    # Attempts of this build that failed so far: the next waits longer.
    failures: Mapped[int] = mapped_column(Integer, server_default=text("0"))


class ChatSession(Base):
    __tablename__ = "chat_sessions"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    project_id: Mapped[str | None] = mapped_column(
        ForeignKey("projects.id", ondelete="SET NULL"), index=True
    )
    title: Mapped[str] = mapped_column(Text, server_default=text("''"))
    message_count: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    create_time: Mapped[datetime] = mapped_column(TS)
    update_time: Mapped[datetime] = mapped_column(TS)
    revision: Mapped[int] = mapped_column(Integer, server_default=text("1"))

    __table_args__ = (
        Index("ix_chat_sessions_user_id_create_time_id", "user_id", "create_time", "id"),
        Index("ix_chat_sessions_create_time_id", "create_time", "id"),
    )


class ChatMessage(Base):
    __tablename__ = "chat_messages"

    session_id: Mapped[str] = mapped_column(
        ForeignKey("chat_sessions.id", ondelete="CASCADE"), primary_key=True
    )
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    role: Mapped[str] = mapped_column(Text)
    content: Mapped[str] = mapped_column(Text)
    metadata_: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSONB)
    create_time: Mapped[datetime] = mapped_column(TS)

    __table_args__ = (CheckConstraint(f"role IN {CHAT_ROLES!r}", name="role"),)


class ServiceToken(Base):
    """A long-lived token of a backend service or operator; only its SHA-256 is kept."""

    __tablename__ = "service_tokens"

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    name: Mapped[str] = mapped_column(Text, unique=True)
    token_hash: Mapped[bytes] = mapped_column(LargeBinary, unique=True)
    scopes: Mapped[list[str]] = mapped_column(ARRAY(Text))
    create_time: Mapped[datetime] = mapped_column(TS, server_default=text("now()"))
    revoke_time: Mapped[datetime | None] = mapped_column(TS)
    last_used_time: Mapped[datetime | None] = mapped_column(TS)


class AgentToken(Base):
    """A build agent's token for one build, until expire_time; only its SHA-256 is kept."""

    __tablename__ = "agent_tokens"

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    build_id: Mapped[str] = mapped_column(ForeignKey("builds.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[bytes] = mapped_column(LargeBinary, unique=True)
    create_time: Mapped[datetime] = mapped_column(TS, server_default=text("now()"))
    expire_time: Mapped[datetime] = mapped_column(TS)
    revoke_time: Mapped[datetime | None] = mapped_column(TS)


class BuildSecret(Base):
    """A secret value a build's logs and events mask; kept only while the
    build can append (deleted when it finishes), never returned by any RPC."""

    __tablename__ = "build_secrets"

    build_id: Mapped[str] = mapped_column(ForeignKey("builds.id", ondelete="CASCADE"), primary_key=True)
    value_hash: Mapped[bytes] = mapped_column(LargeBinary, primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class ServerKey(Base):
    """A key every replica of the database shares, made once (the page-token key)."""

    __tablename__ = "server_keys"

    name: Mapped[str] = mapped_column(Text, primary_key=True)
    value: Mapped[str] = mapped_column(Text)
    create_time: Mapped[datetime] = mapped_column(TS, server_default=text("now()"))


class ArchiveGarbage(Base):
    """An object prefix (`builds/<id>/`) of a deleted build, to empty in the
    archive. Filled by a statement trigger on builds (migration 0005), in the
    deleting transaction; drained by the janitor once `not_before` passed."""

    __tablename__ = "archive_garbage"

    prefix: Mapped[str] = mapped_column(Text, primary_key=True)
    build_id: Mapped[str] = mapped_column(ID)
    queue_time: Mapped[datetime] = mapped_column(TS)
    not_before: Mapped[datetime] = mapped_column(TS, index=True)


def _table(model: type[Base]) -> Table:
    table = model.__table__
    assert isinstance(table, Table)
    return table


# Typed handles for SQLAlchemy Core queries.
users = _table(User)
projects = _table(Project)
app_specs = _table(AppSpec)
builds = _table(Build)
build_logs = _table(BuildLog)
build_events = _table(BuildEvent)
chat_sessions = _table(ChatSession)
chat_messages = _table(ChatMessage)
service_tokens = _table(ServiceToken)
agent_tokens = _table(AgentToken)
build_secrets = _table(BuildSecret)
server_keys = _table(ServerKey)
archive_chunks = _table(ArchiveChunk)
archive_claims = _table(ArchiveClaim)
archive_garbage = _table(ArchiveGarbage)
