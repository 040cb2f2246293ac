"""Logs and events on the wire: the requests' entries -> rows to append,
and the stream responses written as bytes.

Rows -> BuildLog/BuildEvent and the entries a stream sends are the live
feed's (server.live.records): one converter for every source of lines. A
stream response is assembled from entries serialized once per process (not
once per follower); the grpc adapter sends such bytes as they are
(server.rpc.registry).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from buildplatform.v1 import build_event_pb2, build_log_pb2

from server.domain.limits import (
    MAX_BATCH,
    MAX_EVENT_DATA_BYTES,
    MAX_FILTER_VALUES,
    MAX_LOG_MESSAGE_BYTES,
    MAX_LOG_METADATA_BYTES,
    MAX_LOG_STEP_NAME_BYTES,
)
from server.domain.validation import EVENT_TYPE_PATTERN, STEP_ID_PATTERN, Checker
from server.live.records import LEVEL_FROM_PB, varint
from server.store import feeds
from server.wellknown import struct_to_dict


def stream_response(items: list[bytes], cursor: int, caught_up: bool) -> bytes:
    """A StreamBuildLogsResponse or StreamBuildEventsResponse (they share the
    layout: 1 = repeated items, 2 = int64 cursor, 3 = bool caught_up), from
    items encoded by repeated_field_1 (server.live.records), exactly as
    SerializeToString writes it."""
    parts = [*items]
    if cursor:
        parts.append(b"\x10" + varint(cursor))
    if caught_up:
        parts.append(b"\x18\x01")
    return b"".join(parts)


def _batch_size(check: Checker, count: int) -> None:
    if count == 0:
        check.add("entries", "must contain at least one entry")
    elif count > MAX_BATCH:
        check.add("entries", f"must contain at most {MAX_BATCH} entries, got {count}")
    check.done()


STEP_ACTIONS = {build_log_pb2.LOG_STEP_ACTION_START: "start", build_log_pb2.LOG_STEP_ACTION_END: "end"}


def _step(check: Checker, index: int, step: build_log_pb2.LogStep) -> str:
    """The step of entries[index] as the JSON stored in build_logs.step."""
    field = f"entries[{index}].step"
    if not STEP_ID_PATTERN.fullmatch(step.id):
        check.add(f"{field}.id", "must be 1 to 64 characters from A-Z, a-z, 0-9, '_', '.', ':', '-'")
    check.text(f"{field}.name", step.name, max_bytes=MAX_LOG_STEP_NAME_BYTES)
    action = STEP_ACTIONS.get(step.action)
    if action is None:
        check.add(f"{field}.action", "must be LOG_STEP_ACTION_START or LOG_STEP_ACTION_END")
    stored: dict[str, str] = {"id": step.id, "action": action or ""}
    if step.name and action == "start":
        stored["name"] = step.name
    return json.dumps(stored, ensure_ascii=False, separators=(",", ":"))


def log_entries(request: build_log_pb2.AppendBuildLogsRequest) -> list[tuple[str, str, str | None, str | None, int]]:
    """(level, message, metadata JSON, step JSON, wire size bound) per entry."""
    check = Checker()
    _batch_size(check, len(request.entries))
    out: list[tuple[str, str, str | None, str | None, int]] = []
    for index, entry in enumerate(request.entries):
        level = LEVEL_FROM_PB.get(entry.level)
        if level is None:
            check.add(f"entries[{index}].level", "must be a LogLevel other than LOG_LEVEL_UNSPECIFIED")
        metadata = (
            check.json(
                f"entries[{index}].metadata", struct_to_dict(entry.metadata),
                max_bytes=MAX_LOG_METADATA_BYTES, wire_bytes=entry.metadata.ByteSize(),
            )
            if entry.HasField("metadata")
            else None
        )
        step = _step(check, index, entry.step) if entry.HasField("step") else None
        message = entry.message
        if not message and metadata is None and step is None:
            check.add(f"entries[{index}].message", "is required (it may be empty only when metadata or step is set)")
        else:
            check.text(f"entries[{index}].message", message, max_bytes=MAX_LOG_MESSAGE_BYTES)
        out.append((level or "", message, metadata, step, feeds.wire_bound(entry.ByteSize())))
    check.done()
    return out


def event_entries(request: build_event_pb2.AppendBuildEventsRequest) -> list[tuple[str, str, int]]:
    """(type, data JSON, wire size bound) per entry."""
    check = Checker()
    _batch_size(check, len(request.entries))
    out: list[tuple[str, str, int]] = []
    for index, entry in enumerate(request.entries):
        if not EVENT_TYPE_PATTERN.fullmatch(entry.type):
            check.add(
                f"entries[{index}].type",
                "must be 1 to 64 characters from a-z, 0-9, '_', '.', ':', '-', starting with a letter",
            )
        data = check.json(
            f"entries[{index}].data", struct_to_dict(entry.data),
            max_bytes=MAX_EVENT_DATA_BYTES, wire_bytes=entry.data.ByteSize(),
        )
        out.append((entry.type, data or "{}", feeds.wire_bound(entry.ByteSize())))
    check.done()
    return out


def _filter_size(check: Checker, field: str, values: Sequence[object]) -> None:
    """Each wanted value is one index scan per read: bound their number."""
    if len(values) > MAX_FILTER_VALUES:
        check.add(field, f"must hold at most {MAX_FILTER_VALUES} values, got {len(values)}")


def levels(values: Sequence[int]) -> list[str]:
    check = Checker()
    _filter_size(check, "levels", values)
    found = []
    for index, value in enumerate(values):
        level = LEVEL_FROM_PB.get(value)
        if level is None:
            check.add(f"levels[{index}]", "must be a LogLevel other than LOG_LEVEL_UNSPECIFIED")
        else:
            found.append(level)
    check.done()
    return sorted(set(found))


def types(values: Sequence[str]) -> list[str]:
    check = Checker()
    _filter_size(check, "types", values)
    for index, value in enumerate(values):
        if not EVENT_TYPE_PATTERN.fullmatch(value):
            check.add(f"types[{index}]", "is not a valid event type")
    check.done()
    return sorted(set(values))
