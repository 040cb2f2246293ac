"""The two codecs of the HTTP port, for google.protobuf messages.

Like connectrpc.compat's, with two differences:
- the binary codec passes `bytes` through: a core stream may yield a
  response that is already serialized (the log and event streams serialize
  each line once per process, server.rpc.registry), and the adapter hands
  those bytes on as they are when the caller speaks binary (server.http.registry
  parses them only for a JSON caller);
- a request that does not decode is the same INVALID_ARGUMENT the gRPC port
  answers (field `request`, with BadRequest), not a bare "unmarshal" error.

Both count the bytes of each message they encode or decode for the call's
metrics (server.http.calls.sent / received).

JSON is the proto3 JSON mapping (lowerCamelCase names, enums by name, 64-bit
integers as strings), compact, on one line; requests may use either the
JSON name or the proto field name, and unknown fields are ignored (a client
with a newer contract still works), as connect-go does.
"""

from __future__ import annotations

from typing import Any

from connectrpc.codec import Codec
from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message

from server.domain.errors import InvalidArgument
from server.http.calls import received, sent


def _undecodable(kind: str, error: Exception) -> InvalidArgument:
    return InvalidArgument.one("request", f"is not a valid {kind} message: {error}")


class Binary:
    def name(self) -> str:
        return "proto"

    def encode(self, message: Message | bytes) -> bytes:
        data = message if isinstance(message, bytes) else message.SerializeToString()
        sent(len(data))
        return data

    def decode(self, data: bytes | bytearray, message_class: type[Any]) -> Any:
        received(len(data))
        try:
            return message_class.FromString(bytes(data))
        except DecodeError as error:
            raise _undecodable("protobuf", error) from None


class Json:
    def name(self) -> str:
        return "json"

    def encode(self, message: Message) -> bytes:
        data = json_format.MessageToJson(message, indent=None).encode()
        sent(len(data))
        return data

    def decode(self, data: bytes | bytearray, message_class: type[Any]) -> Any:
        received(len(data))
        message = message_class()
        try:
            json_format.Parse(bytes(data), message, ignore_unknown_fields=True)
        except (json_format.ParseError, ValueError) as error:  # ValueError: not UTF-8
            raise _undecodable("JSON", error) from None
        return message


CODECS: list[Codec[Any, Any]] = [Binary(), Json()]
