"""The feed's records: a log or event row as every reader sends it.

`Entry` is what the feed keeps per row, converted once per process (not
once per follower): the row serialized as an element of the stream
response's repeated field 1, so a response is the entries' bytes joined
(server.core.feeds_wire.stream_response). Measured: building and
serializing a 50-line response costs about 78 us, joining 50 pre-serialized
lines about 3 us. The converters here are the only ones: whatever reads a
build's lines (the ring, the hot rows, an archive written from the same
entries) gives the same bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple, cast

from buildplatform.v1 import build_event_pb2, build_log_pb2

from server.store.feeds import SERVER_FIELDS_BYTES
from server.store.rows import EventRow, LogRow
from server.wellknown import dict_to_struct, timestamp


class Entry(NamedTuple):
    """A row converted once for every follower: its sequence, the value
    stream filters look at (level or type), the row serialized as an
    element of the stream response's repeated field, and its create_time
    (seconds since the epoch: set by the appending transaction, it is where
    the delivery lag a stream measures starts)."""

    seq: int
    value: str
    wire: bytes
    time: float = 0.0


LEVEL_TO_PB = {
    "info": build_log_pb2.LOG_LEVEL_INFO,
    "warn": build_log_pb2.LOG_LEVEL_WARN,
    "error": build_log_pb2.LOG_LEVEL_ERROR,
    "tool": build_log_pb2.LOG_LEVEL_TOOL,
}
LEVEL_FROM_PB: dict[int, str] = {number: level for level, number in LEVEL_TO_PB.items()}


def log_to_pb(row: LogRow) -> build_log_pb2.BuildLog:
    return build_log_pb2.BuildLog(
        id=row["id"],
        build_id=row["build_id"],
        sequence=row["seq"],
        level=LEVEL_TO_PB[row["level"]],
        message=row["message"],
        metadata=dict_to_struct(row["metadata"]),
        create_time=timestamp(row["create_time"]),
        step=_step(row.get("step")),
    )


STEP_TO_PB = {"start": build_log_pb2.LOG_STEP_ACTION_START, "end": build_log_pb2.LOG_STEP_ACTION_END}


def _step(step: dict[str, str] | None) -> build_log_pb2.LogStep | None:
    if step is None:
        return None
    return build_log_pb2.LogStep(id=step["id"], name=step.get("name", ""), action=STEP_TO_PB[step["action"]])


def event_to_pb(row: EventRow) -> build_event_pb2.BuildEvent:
    return build_event_pb2.BuildEvent(
        id=row["id"],
        build_id=row["build_id"],
        sequence=row["seq"],
        type=row["type"],
        data=dict_to_struct(row["data"]),
        create_time=timestamp(row["create_time"]),
    )


def varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def repeated_field_1(serialized: bytes) -> bytes:
    """`serialized` (one message) encoded as an element of field 1, a
    repeated message field; concatenating such elements is the field."""
    return b"\x0a" + varint(len(serialized)) + serialized


# The store reads rows of either kind as dicts (one implementation for both).
# Serialized deterministically: the map of a Struct (metadata, data) is
# otherwise written in the order of a hash table seeded per process, and the
# archiver's process must write the bytes the readers' processes write.
def log_entry(row: dict[str, Any]) -> Entry:
    message = log_to_pb(cast(LogRow, row)).SerializeToString(deterministic=True)
    return Entry(row["seq"], row["level"], repeated_field_1(message), row["create_time"].timestamp())


def event_entry(row: dict[str, Any]) -> Entry:
    message = event_to_pb(cast(EventRow, row)).SerializeToString(deterministic=True)
    return Entry(row["seq"], row["type"], repeated_field_1(message), row["create_time"].timestamp())


# The converter of each kind (server.store.feeds.Kind.name).
TO_ENTRY: dict[str, Callable[[dict[str, Any]], Entry]] = {"log": log_entry, "event": event_entry}


def _varint_size(value: int) -> int:
    size = 1
    while value > 0x7F:
        value >>= 7
        size += 1
    return size


def _header_size(wire: bytes) -> int:
    """Bytes before the message in an element of repeated field 1: the tag
    and the message's length."""
    at = 1
    while wire[at] & 0x80:
        at += 1
    return at + 1


def item_size(wire: bytes) -> int:
    """The serialized size of the message an entry's wire holds (its ByteSize())."""
    return len(wire) - _header_size(wire)


def stored_bound(entry: Entry) -> int:
    """The wire_bytes the store keeps for this entry's row
    (server.store.feeds.wire_bound of the size of the entry as appended),
    recomputed from the entry: what a reader of the archive needs to cut its
    reads exactly where a read of the hot rows cuts (so both answer the same
    pages and messages). The appended entry's fields are the row's message
    less the fields the server adds: id (1), build_id (2) and sequence (3),
    written first, and create_time, written last."""
    wire = entry.wire
    start = _header_size(wire)
    at = start + 1                      # past the id's tag
    while wire[at] & 0x80:
        at += 1
    at += 1                             # past the id
    at += 2 + wire[at + 1]              # build_id: its tag, length (< 128) and bytes
    at += 1 + _varint_size(entry.seq)   # sequence: its tag and value
    micros = round(entry.time * 1e6)
    seconds, rest = divmod(micros, 1_000_000)
    stamp = (1 + _varint_size(seconds) if seconds else 0) + (1 + _varint_size(rest * 1000) if rest else 0)
    return len(wire) - at - (2 + stamp) + SERVER_FIELDS_BYTES
