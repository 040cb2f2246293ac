"""Paired converters between wire messages and rows.

`*_to_pb(row)` builds the response message; `*_values(msg, ...)` validates a
request message and returns the column values to write. Output-only fields
of input messages are ignored, as the protos document.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from buildplatform.v1 import (
    app_spec_pb2,
    build_event_pb2,
    build_log_pb2,
    build_pb2,
    chat_session_pb2,
    project_pb2,
    user_pb2,
)
from google.protobuf import field_mask_pb2, struct_pb2, timestamp_pb2

from server.domain.errors import InvalidArgument
from server.domain.limits import (
    MAX_CHAT_METADATA_BYTES,
    MAX_DOCUMENT_BYTES,
    MAX_NAME,
    MAX_PROGRESS_BYTES,
    MAX_SHORT_TEXT,
    MAX_URL,
)
from server.domain.status import BuildStatus, ReviewDecision
from server.domain.validation import EPOCH, Checker

# --- well-known types ---------------------------------------------------------

Row = Mapping[Any, Any]


def timestamp(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    delta = value - EPOCH  # exact integer arithmetic; float seconds can round up a second
    return timestamp_pb2.Timestamp(
        seconds=delta.days * 86400 + delta.seconds, nanos=delta.microseconds * 1000
    )


def from_timestamp(value: timestamp_pb2.Timestamp, *, field: str = "since_time") -> datetime:
    """The instant of a request's Timestamp (since_time is the only one the
    API takes); INVALID_ARGUMENT outside Timestamp's range."""
    check = Checker()
    instant = check.timestamp(field, value.seconds, value.nanos)
    check.done()
    assert instant is not None
    return instant


def _value_to_py(value: struct_pb2.Value) -> Any:
    kind = value.WhichOneof("kind")
    if kind == "struct_value":
        return struct_to_dict(value.struct_value)
    if kind == "list_value":
        return [_value_to_py(item) for item in value.list_value.values]
    if kind == "null_value" or kind is None:
        return None
    return getattr(value, kind)


def struct_to_dict(value: struct_pb2.Struct) -> dict[str, Any]:
    return {key: _value_to_py(item) for key, item in value.fields.items()}


def dict_to_struct(value: dict[str, Any] | None) -> struct_pb2.Struct | None:
    if value is None:
        return None
    struct = struct_pb2.Struct()
    struct.update(value)
    return struct


def etag(row: Row) -> str:
    return str(row["revision"])


def parse_etag(field: str, value: str) -> int | None:
    """The revision an etag names, None when empty; INVALID_ARGUMENT when forged."""
    check = Checker()
    revision = check.revision(field, value)
    check.done()
    return revision


def mask_paths(
    mask: field_mask_pb2.FieldMask, mutable: Iterable[str], *, immutable: Iterable[str] = ()
) -> list[str]:
    """The validated paths of an update mask; "*" means every mutable field."""
    allowed = list(mutable)
    frozen = set(immutable)
    check = Checker()
    if not mask.paths:
        check.add("update_mask", f"is required: name the fields to update ({', '.join(allowed)}) or '*'")
    paths = allowed if list(mask.paths) == ["*"] else list(mask.paths)
    for index, path in enumerate(paths):
        if path in frozen:
            check.add(f"update_mask.paths[{index}]", f"{path!r} cannot be changed")
        elif path not in allowed:
            check.add(
                f"update_mask.paths[{index}]",
                f"{path!r} is not an updatable field; updatable: {', '.join(allowed)}",
            )
    check.done()
    return paths


def require_message(field: str, present: bool) -> None:
    if not present:
        raise InvalidArgument.one(field, "is required")


def validate_id(field: str, value: str) -> str:
    check = Checker()
    check.id(field, value)
    check.done()
    return value


def optional_text(msg: Any, name: str) -> str | None:
    return getattr(msg, name) if msg.HasField(name) else None


# --- users --------------------------------------------------------------------


def user_to_pb(row: Row) -> user_pb2.User:
    return user_pb2.User(
        id=row["id"],
        clerk_id=row["clerk_id"],
        email=row["email"],
        name=row["name"],
        create_time=timestamp(row["create_time"]),
        update_time=timestamp(row["update_time"]),
        etag=etag(row),
    )


def user_values(user: user_pb2.User, paths: Iterable[str], prefix: str = "user") -> dict[str, Any]:
    check = Checker()
    values: dict[str, Any] = {}
    for path in paths:
        if path == "clerk_id":
            values["clerk_id"] = check.text(f"{prefix}.clerk_id", user.clerk_id, required=True, max_chars=MAX_NAME)
        elif path == "email":
            values["email"] = check.email(f"{prefix}.email", user.email)
        elif path == "name":
            name = optional_text(user, "name")
            values["name"] = None if name is None else check.text(f"{prefix}.name", name, max_chars=MAX_NAME)
    check.done()
    return values


# --- projects -----------------------------------------------------------------


def project_to_pb(row: Row) -> project_pb2.Project:
    return project_pb2.Project(
        id=row["id"],
        user_id=row["user_id"],
        name=row["name"],
        description=row["description"],
        create_time=timestamp(row["create_time"]),
        update_time=timestamp(row["update_time"]),
        etag=etag(row),
    )


def project_values(project: project_pb2.Project, paths: Iterable[str]) -> dict[str, Any]:
    check = Checker()
    values: dict[str, Any] = {}
    for path in paths:
        if path == "user_id":
            values["user_id"] = check.id("project.user_id", project.user_id)
        elif path == "name":
            values["name"] = check.text("project.name", project.name, required=True, max_chars=MAX_NAME)
        elif path == "description":
            description = optional_text(project, "description")
            values["description"] = (
                None if description is None else check.text("project.description", description, max_chars=MAX_SHORT_TEXT)
            )
    check.done()
    return values


# --- builds -------------------------------------------------------------------

STATUS_TO_PB = {status: build_pb2.BuildStatus.Value(f"BUILD_STATUS_{status.value}") for status in BuildStatus}
STATUS_FROM_PB: dict[int, BuildStatus] = {number: status for status, number in STATUS_TO_PB.items()}
DECISION_TO_PB = {d: build_pb2.ReviewDecision.Value(f"REVIEW_DECISION_{d.value}") for d in ReviewDecision}
DECISION_FROM_PB: dict[int, ReviewDecision] = {number: decision for decision, number in DECISION_TO_PB.items()}


def status_from_pb(field: str, value: int) -> BuildStatus:
    status = STATUS_FROM_PB.get(value)
    if status is None:
        raise InvalidArgument.one(field, "must be a BuildStatus other than BUILD_STATUS_UNSPECIFIED")
    return status


def statuses_from_pb(field: str, values: Iterable[int]) -> list[BuildStatus]:
    """A filter's distinct statuses, sorted; every bad value is a violation."""
    check = Checker()
    statuses = set()
    for index, value in enumerate(values):
        status = STATUS_FROM_PB.get(value)
        if status is None:
            check.add(f"{field}[{index}]", "must be a BuildStatus other than BUILD_STATUS_UNSPECIFIED")
        else:
            statuses.add(status)
    check.done()
    return sorted(statuses)


def review_to_pb(review: dict[str, Any]) -> build_pb2.BuildReview:
    return build_pb2.BuildReview(
        gate=STATUS_TO_PB[BuildStatus(review["gate"])],
        decision=DECISION_TO_PB[ReviewDecision(review["decision"])],
        comment=review["comment"],
        reviewer=review["reviewer"],
        create_time=timestamp(datetime.fromisoformat(review["create_time"])),
    )


def build_to_pb(row: Row) -> build_pb2.Build:
    return build_pb2.Build(
        id=row["id"],
        user_id=row["user_id"],
        project_id=row["project_id"],
        status=STATUS_TO_PB[row["status"]],
        app_spec=row["app_spec"],
        app_spec_id=row["app_spec_id"],
        sandbox_id=row["sandbox_id"],
        progress=dict_to_struct(row["progress"]),
        output_url=row["output_url"],
        artifact_key=row["artifact_key"],
        create_time=timestamp(row["create_time"]),
        update_time=timestamp(row["update_time"]),
        start_time=timestamp(row["start_time"]),
        finish_time=timestamp(row["finish_time"]),
        status_reason=row["status_reason"],
        reviews=[review_to_pb(review) for review in row["reviews"]],
        etag=etag(row),
        last_log_sequence=row["last_log_seq"],
        last_event_sequence=row["last_event_seq"],
    )


BUILD_MUTABLE = ("sandbox_id", "progress", "output_url", "artifact_key", "app_spec")
BUILD_IMMUTABLE = (
    "id", "user_id", "project_id", "status", "app_spec_id", "create_time", "update_time",
    "start_time", "finish_time", "status_reason", "reviews", "etag", "last_log_sequence",
    "last_event_sequence",
)


def build_values(build: build_pb2.Build, paths: Iterable[str]) -> dict[str, Any]:
    check = Checker()
    values: dict[str, Any] = {}
    for path in paths:
        field = f"build.{path}"
        if path in ("user_id", "project_id"):
            values[path] = check.id(field, getattr(build, path))
        elif path == "app_spec_id":
            spec_id = optional_text(build, "app_spec_id")
            values[path] = check.id(field, spec_id, required=False) if spec_id else None
        elif path == "app_spec":
            values[path] = check.text(field, build.app_spec, max_bytes=MAX_DOCUMENT_BYTES)
        elif path in ("sandbox_id", "output_url", "artifact_key"):
            value = optional_text(build, path)
            values[path] = None if value is None else check.text(field, value, max_chars=MAX_URL)
        elif path == "progress":
            progress = struct_to_dict(build.progress) if build.HasField("progress") else None
            valid = check.json(field, progress, max_bytes=MAX_PROGRESS_BYTES, wire_bytes=build.progress.ByteSize())
            values[path] = progress if valid else None
    check.done()
    return values


def new_build_values(build: build_pb2.Build) -> dict[str, Any]:
    values = build_values(
        build, ("user_id", "project_id", "app_spec_id", "app_spec", "sandbox_id", "progress", "output_url", "artifact_key")
    )
    if not values["app_spec"].strip() and not values["app_spec_id"]:
        raise InvalidArgument.one("build.app_spec", "is required unless build.app_spec_id names an app spec")
    return values


# --- chat sessions ------------------------------------------------------------

ROLE_TO_PB = {
    "user": chat_session_pb2.CHAT_ROLE_USER,
    "assistant": chat_session_pb2.CHAT_ROLE_ASSISTANT,
    "system": chat_session_pb2.CHAT_ROLE_SYSTEM,
    "tool": chat_session_pb2.CHAT_ROLE_TOOL,
}
ROLE_FROM_PB: dict[int, str] = {number: role for role, number in ROLE_TO_PB.items()}


def chat_session_to_pb(row: Row) -> chat_session_pb2.ChatSession:
    return chat_session_pb2.ChatSession(
        id=row["id"],
        user_id=row["user_id"],
        project_id=row["project_id"],
        title=row["title"],
        create_time=timestamp(row["create_time"]),
        update_time=timestamp(row["update_time"]),
        etag=etag(row),
        message_count=row["message_count"],
    )


def chat_session_values(session: chat_session_pb2.ChatSession, paths: Iterable[str]) -> dict[str, Any]:
    check = Checker()
    values: dict[str, Any] = {}
    for path in paths:
        if path == "user_id":
            values["user_id"] = check.id("chat_session.user_id", session.user_id)
        elif path == "project_id":
            project_id = optional_text(session, "project_id")
            values["project_id"] = check.id("chat_session.project_id", project_id, required=False) if project_id else None
        elif path == "title":
            values["title"] = check.text("chat_session.title", session.title, max_chars=500)
    check.done()
    return values


def chat_message_to_pb(row: Row) -> chat_session_pb2.ChatMessage:
    return chat_session_pb2.ChatMessage(
        session_id=row["session_id"],
        sequence=row["seq"],
        role=ROLE_TO_PB[row["role"]],
        content=row["content"],
        metadata=dict_to_struct(row["metadata"]),
        create_time=timestamp(row["create_time"]),
    )


def chat_message_values(message: chat_session_pb2.ChatMessage) -> dict[str, Any]:
    check = Checker()
    role = ROLE_FROM_PB.get(message.role)
    if role is None:
        check.add("message.role", "must be a ChatRole other than CHAT_ROLE_UNSPECIFIED")
    content = check.text("message.content", message.content, required=True, max_bytes=MAX_DOCUMENT_BYTES)
    metadata = struct_to_dict(message.metadata) if message.HasField("metadata") else None
    check.json("message.metadata", metadata, max_bytes=MAX_CHAT_METADATA_BYTES, wire_bytes=message.metadata.ByteSize())
    check.done()
    return {"role": role, "content": content, "metadata": metadata}


# --- app specs ----------------------------------------------------------------


def app_spec_to_pb(row: Row) -> app_spec_pb2.AppSpec:
    return app_spec_pb2.AppSpec(
        id=row["id"],
        project_id=row["project_id"],
        version=row["version"],
        content=row["content"],
        chat_session_id=row["chat_session_id"],
        summary=row["summary"],
        create_time=timestamp(row["create_time"]),
        update_time=timestamp(row["update_time"]),
        etag=etag(row),
    )


def app_spec_values(spec: app_spec_pb2.AppSpec, paths: Iterable[str]) -> dict[str, Any]:
    check = Checker()
    values: dict[str, Any] = {}
    for path in paths:
        if path == "project_id":
            values["project_id"] = check.id("app_spec.project_id", spec.project_id)
        elif path == "content":
            values["content"] = check.text("app_spec.content", spec.content, required=True, max_bytes=MAX_DOCUMENT_BYTES)
        elif path == "chat_session_id":
            session_id = optional_text(spec, "chat_session_id")
            values["chat_session_id"] = (
                check.id("app_spec.chat_session_id", session_id, required=False) if session_id else None
            )
        elif path == "summary":
            values["summary"] = check.text("app_spec.summary", spec.summary, max_chars=MAX_SHORT_TEXT)
    check.done()
    return values


# --- logs and events (see server.rpc.streams) ---------------------------------

LEVEL_TO_PB = {
    "info": build_log_pb2.LOG_LEVEL_INFO,
    "warn": build_log_pb2.LOG_LEVEL_WARN,
    "error": build_log_pb2.LOG_LEVEL_ERROR,
    "tool": build_log_pb2.LOG_LEVEL_TOOL,
}
LEVEL_FROM_PB: dict[int, str] = {number: level for level, number in LEVEL_TO_PB.items()}


def log_to_pb(row: Row) -> build_log_pb2.BuildLog:
    return build_log_pb2.BuildLog(
        id=row["id"],
        build_id=row["build_id"],
        sequence=row["seq"],
        level=LEVEL_TO_PB[row["level"]],
        message=row["message"],
        metadata=dict_to_struct(row["metadata"]),
        create_time=timestamp(row["create_time"]),
    )


def event_to_pb(row: Row) -> build_event_pb2.BuildEvent:
    return build_event_pb2.BuildEvent(
        id=row["id"],
        build_id=row["build_id"],
        sequence=row["seq"],
        type=row["type"],
        data=dict_to_struct(row["data"]),
        create_time=timestamp(row["create_time"]),
    )
