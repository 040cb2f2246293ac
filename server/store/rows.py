"""Typed rows: what the store returns for each resource, one dataclass per
table, with exactly the table's columns (the converters beside each core
service turn them into messages).

Rows are never changed once read, yet they are not frozen dataclasses: a
frozen one's __init__ sets each field through object.__setattr__, 2.6 us
per BuildRow against 0.3 us, which was 6 % of a ListBuilds page's CPU
(docs/benchmarks.md, "Issue 16 on a quiet machine")."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypedDict, TypeVar

from server.domain.status import BuildStatus

R = TypeVar("R")

_NAMES: dict[type[Any], tuple[str, ...]] = {}


def typed(cls: type[R], row: Mapping[Any, Any]) -> R:
    """`row` (a mapping that may carry more columns, such as a page's
    `candidates`) as a `cls`."""
    names = _NAMES.get(cls)
    if names is None:
        names = _NAMES[cls] = tuple(f.name for f in dataclasses.fields(cls))  # type: ignore[arg-type]
    return cls(**{name: row[name] for name in names})


@dataclass(slots=True)
class UserRow:
    id: str
    clerk_id: str
    email: str
    name: str | None
    create_time: datetime
    update_time: datetime
    revision: int


@dataclass(slots=True)
class ProjectRow:
    id: str
    user_id: str
    name: str
    description: str | None
    create_time: datetime
    update_time: datetime
    revision: int
    last_app_spec_version: int
    log_retention_days: int | None


@dataclass(slots=True)
class BuildRow:
    id: str
    user_id: str
    project_id: str
    # BuildStatus through SQLAlchemy, its value (a str) through psycopg:
    # equal and hashed alike, as BuildStatus is a StrEnum.
    status: BuildStatus
    app_spec: str
    app_spec_id: str | None
    sandbox_id: str | None
    progress: dict[str, Any] | None
    output_url: str | None
    artifact_key: str | None
    create_time: datetime
    update_time: datetime
    start_time: datetime | None
    finish_time: datetime | None
    status_reason: str
    reviews: list[dict[str, Any]]
    revision: int
    last_log_seq: int
    last_event_seq: int
    last_log_time: datetime | None
    last_event_time: datetime | None
    secrets_version: int   # masking (server.core.masking): never sent, the values are elsewhere
    mask_shapes: bool
    # The tier of its logs and events (server.store.models.Build).
    archive_state: str = "hot"
    archive_time: datetime | None = None
    expire_time: datetime | None = None


@dataclass(slots=True)
class ChatSessionRow:
    id: str
    user_id: str
    project_id: str | None
    title: str
    message_count: int
    create_time: datetime
    update_time: datetime
    revision: int


@dataclass(slots=True)
class ChatMessageRow:
    session_id: str
    seq: int
    role: str
    content: str
    metadata: dict[str, Any] | None
    create_time: datetime


@dataclass(slots=True)
class AppSpecRow:
    id: str
    project_id: str
    version: int
    content: str
    chat_session_id: str | None
    summary: str
    create_time: datetime
    update_time: datetime
    revision: int


class LogRow(TypedDict):
    """A build_logs row as the feeds read it (a dict: the hot path of every
    follower, where building an object per row would cost)."""

    build_id: str
    seq: int
    id: int
    level: str
    message: str
    metadata: dict[str, Any] | None
    step: dict[str, str] | None
    create_time: datetime
    wire_bytes: int


class EventRow(TypedDict):
    build_id: str
    seq: int
    id: int
    type: str
    data: dict[str, Any]
    create_time: datetime
    wire_bytes: int
