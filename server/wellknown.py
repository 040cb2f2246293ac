"""Protobuf's well-known types (Timestamp, Struct) to and from Python values.

A leaf: every layer that writes protobuf (server.core's converters, the live
feed's records in server.live) imports it, and it imports nothing above
server.domain.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from google.protobuf import struct_pb2, timestamp_pb2

from server.domain.validation import EPOCH


def timestamp(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    delta = value - EPOCH  # exact integer arithmetic; float seconds can round up a second
    return timestamp_pb2.Timestamp(
        seconds=delta.days * 86400 + delta.seconds, nanos=delta.microseconds * 1000
    )


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
