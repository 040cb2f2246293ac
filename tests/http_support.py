"""A client of the HTTP port, written once for the tests and the bench, with
nothing but the standard library (http.client): Connect unary (JSON or
binary), Connect server streams and gRPC-Web over HTTP/1.1, each frame built
and read by hand, as a browser's fetch would send and read them.

Every call answers an `Outcome`: the response messages, or the error as
(code, message, google.rpc details), in gRPC's terms so that a test can
compare it with what the gRPC port answered.
"""

from __future__ import annotations

import base64
import http.client
import json
import ssl
import struct
import urllib.parse
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import any_pb2, json_format
from google.protobuf.message import Message
from google.rpc import status_pb2

# Connect's codes are gRPC's, lowercased ("canceled" spelt the American way).
CONNECT_TO_GRPC = {
    ("canceled" if code is grpc.StatusCode.CANCELLED else code.name.lower()): code.name
    for code in grpc.StatusCode
    if code is not grpc.StatusCode.OK
}


def _unpadded_b64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4))


@dataclass
class Outcome:
    """What a call answered: `code` is "OK" or a gRPC status name."""

    code: str = "OK"
    message: str = ""
    details: list[any_pb2.Any] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    http_status: int = 200
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def response(self) -> Message:
        assert self.code == "OK", f"{self.code}: {self.message}"
        assert len(self.messages) == 1, self.messages
        return self.messages[0]

    def error(self) -> tuple[str, str, list[any_pb2.Any]]:
        return self.code, self.message, list(self.details)


def grpc_outcome(error: grpc.RpcError) -> Outcome:
    """The Outcome of a failed call of the generated gRPC stubs."""
    from grpc_status import rpc_status

    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    details = list(status.details) if status is not None else []
    return Outcome(error.code().name, error.details() or "", details)  # type: ignore[attr-defined]


def frame(payload: bytes, flags: int = 0) -> bytes:
    """One envelope (Connect streams and gRPC-Web): flags, big-endian length, payload."""
    return struct.pack(">BI", flags, len(payload)) + payload


class HttpClient:
    """Calls to the HTTP port at `port` (TLS with `context`), carrying
    `authorization: Bearer <token>` when a token is given."""

    def __init__(self, port: int, token: str | None = None, *, host: str = "127.0.0.1",
                 context: ssl.SSLContext | None = None) -> None:
        self.host, self.port, self.token, self.context = host, port, token, context

    def connection(self, timeout: float = 30) -> http.client.HTTPConnection:
        if self.context is not None:
            return http.client.HTTPSConnection(self.host, self.port, timeout=timeout, context=self.context)
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def _headers(self, content_type: str, token: str | None, extra: Mapping[str, str]) -> dict[str, str]:
        headers = {"content-type": content_type, **extra}
        token = self.token if token is None else token
        if token:
            headers["authorization"] = f"Bearer {token}"
        return headers

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: Mapping[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        """A plain HTTP request: status, headers (lowercase names), body."""
        conn = self.connection()
        try:
            conn.request(method, path, body=body, headers=dict(headers or {}))
            response = conn.getresponse()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        finally:
            conn.close()

    # --- Connect unary --------------------------------------------------------------------

    def unary(self, method: str, request: Message, response_type: type[Message], *, codec: str = "json",
              token: str | None = None, headers: Mapping[str, str] | None = None) -> Outcome:
        """A Connect unary call: POST /<service>/<method>, application/json or application/proto."""
        if codec == "json":
            body = json_format.MessageToJson(request).encode()
        else:
            body = request.SerializeToString()
        status, got, data = self.request(
            "POST", f"/{method}", body,
            self._headers(f"application/{codec}", token, {"connect-protocol-version": "1", **(headers or {})}),
        )
        if status != 200:
            outcome = connect_error(json.loads(data))
        elif codec == "json":
            outcome = Outcome(messages=[json_format.Parse(data, response_type())])
        else:
            outcome = Outcome(messages=[response_type.FromString(data)])
        outcome.http_status, outcome.headers = status, got
        return outcome

    # --- Connect and gRPC-Web server streams ------------------------------------------------

    def open_stream(self, method: str, request: Message, response_type: type[Message], *,
                    protocol: str = "connect", codec: str = "proto", token: str | None = None,
                    headers: Mapping[str, str] | None = None, timeout: float = 30) -> Stream:
        """Start a server stream; read it with Stream.messages() and Stream.outcome."""
        payload = json_format.MessageToJson(request).encode() if codec == "json" else request.SerializeToString()
        if protocol == "connect":
            content_type, extra = f"application/connect+{codec}", {"connect-protocol-version": "1"}
        else:
            content_type, extra = f"application/grpc-web+{codec}", {"x-grpc-web": "1"}
        conn = self.connection(timeout)
        conn.request("POST", f"/{method}", body=frame(payload),
                     headers=self._headers(content_type, token, {**extra, **(headers or {})}))
        return Stream(conn, conn.getresponse(), response_type, protocol, codec)

    def stream(self, method: str, request: Message, response_type: type[Message], **options: Any) -> Outcome:
        """A whole server stream: every message, then how it ended."""
        opened = self.open_stream(method, request, response_type, **options)
        try:
            messages = list(opened.messages())
        finally:
            opened.close()
        outcome = opened.outcome
        outcome.messages = messages
        return outcome


def connect_error(error: Mapping[str, Any]) -> Outcome:
    """The Outcome of a Connect error (a unary error body, or a stream's end message's `error`)."""
    details = [
        any_pb2.Any(type_url=f"type.googleapis.com/{detail['type']}", value=_unpadded_b64(detail["value"]))
        for detail in error.get("details", ())
    ]
    return Outcome(CONNECT_TO_GRPC[error["code"]], error.get("message", ""), details)


class Stream:
    """A server stream being read, frame by frame, as it arrives."""

    def __init__(self, conn: http.client.HTTPConnection, response: http.client.HTTPResponse,
                 response_type: type[Message], protocol: str, codec: str) -> None:
        self.conn, self.response, self.response_type = conn, response, response_type
        self.protocol, self.codec = protocol, codec
        self.headers = {k.lower(): v for k, v in response.getheaders()}
        self.outcome: Outcome = Outcome(http_status=response.status, headers=self.headers)
        self.ended = False

    def _read(self, count: int) -> bytes:
        data = b""
        while len(data) < count:
            chunk = self.response.read(count - len(data))
            if not chunk:
                break
            data += chunk
        return data

    def messages(self) -> Iterator[Message]:
        """Each response message as it arrives; `outcome` holds the end once it has."""
        yield from self._messages()
        self.outcome.http_status, self.outcome.headers = self.response.status, self.headers

    def _messages(self) -> Iterator[Message]:
        if self.response.status != 200:      # an error before the stream began (Connect)
            body = self.response.read()
            self.outcome = connect_error(json.loads(body)) if body else Outcome("UNKNOWN", f"HTTP {self.response.status}")
            self.outcome.http_status = self.response.status
            self.ended = True
            return
        if self.protocol == "grpc-web" and "grpc-status" in self.headers:   # trailers-only
            self.outcome = self._grpc_web_end(self.headers)
            self.ended = True
            return
        while True:
            prefix = self._read(5)
            if len(prefix) < 5:
                self.outcome = Outcome("UNKNOWN", "the stream ended without its end message")
                self.ended = True
                return
            flags, length = struct.unpack(">BI", prefix)
            payload = self._read(length)
            if self.protocol == "connect" and flags & 0b10:
                end = json.loads(payload)
                self.outcome = connect_error(end["error"]) if "error" in end else Outcome()
                self.ended = True
                return
            if self.protocol == "grpc-web" and flags & 0x80:
                trailers = {}
                for line in payload.decode().split("\r\n"):
                    if line:
                        name, _, value = line.partition(":")
                        trailers[name.strip().lower()] = value.strip()
                self.outcome = self._grpc_web_end(trailers)
                self.ended = True
                return
            if self.codec == "json":
                yield json_format.Parse(payload, self.response_type())
            else:
                yield self.response_type.FromString(payload)

    @staticmethod
    def _grpc_web_end(trailers: Mapping[str, str]) -> Outcome:
        code = grpc.StatusCode.OK
        for candidate in grpc.StatusCode:
            if candidate.value[0] == int(trailers["grpc-status"]):
                code = candidate
        if code is grpc.StatusCode.OK:
            return Outcome()
        details: list[any_pb2.Any] = []
        if "grpc-status-details-bin" in trailers:
            details = list(status_pb2.Status.FromString(_unpadded_b64(trailers["grpc-status-details-bin"])).details)
        return Outcome(code.name, urllib.parse.unquote(trailers.get("grpc-message", "")), details)

    def close(self) -> None:
        self.conn.close()
