"""Around every call of the HTTP port, what the gRPC interceptor does around
a gRPC call (server.rpc.interceptors), in the same order and with the same
shared pieces (server.transport):

1. request id: the `x-request-id` header or a new one; sent back in the
   `x-request-id` response header, in every log line of the call and in the
   message of an INTERNAL status;
2. admission: the process's one `Calls` counts HTTP calls with the gRPC ones
   (MAX_CONCURRENT_CALLS, MAX_STREAMS). The deadline the caller sent
   (`connect-timeout-ms`, or `grpc-timeout` for gRPC-Web) becomes
   `server.store.db.call_deadline`; connectrpc enforces it as well;
3. authentication: the `authorization: Bearer <credential>` header, through
   the same Authenticator (and its cache) as gRPC: the same principals and
   the same UNAUTHENTICATED reasons. It runs before the request body is read;
4. error mapping: the status of server.transport.status, sent as the
   Connect (or gRPC-Web) error with the same code, message and
   google.rpc details;
5. access log: the gRPC line's fields, plus `"transport": "http"`;
6. metrics and span: as on the gRPC port (server.rpc.interceptors), with
   `transport="http"`; the span joins the caller's trace from the
   `traceparent` header. The message bytes are counted by the codecs
   (server.http.codecs) as they encode and decode. A unary response is
   encoded after `on_end`, so its size is recorded when it is encoded.

It is a connectrpc metadata interceptor: `on_start` runs once the request's
headers are parsed, `on_end` once the call's outcome is known (a request that
did not decode, a deadline, a client gone and a shutdown included), and an
error it raises replaces the call's.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING

from connectrpc.code import Code
from connectrpc.errors import ConnectError, ErrorDetail
from connectrpc.method import StreamType
from connectrpc.request import RequestContext
from google.rpc import code_pb2, status_pb2
from protobuf.wkt import Any as AnyDetail

from server.auth import Authenticator
from server.domain.access import Principal
from server.domain.errors import DomainError, Unavailable
from server.store.db import call_deadline
from server.transport.calls import SHUTTING_DOWN, Calls, log_call, request_id, settle

if TYPE_CHECKING:
    from server.telemetry.metrics import MethodMetrics
    from server.telemetry.tracing import RpcSpan

# google.rpc.Code numbers <-> Connect codes (Connect spells CANCELLED "canceled").
CONNECT_CODES = {
    number: Code("canceled" if name == "CANCELLED" else name.lower())
    for name, number in code_pb2.Code.items() if number != code_pb2.OK
}
_NAMES = {code: code_pb2.Code.Name(number) for number, code in CONNECT_CODES.items()}


def connect_error(status: status_pb2.Status) -> ConnectError:
    """The Connect error with the status's code, message and details."""
    details = [ErrorDetail(AnyDetail(type_url=any.type_url, value=any.value)) for any in status.details]
    return ConnectError(CONNECT_CODES[status.code], status.message, details)


@dataclass(slots=True)
class HttpCall:
    method: str      # /buildplatform.v1.BuildService/GetBuild, as gRPC logs it
    stream: bool
    started: float
    peer: str
    request_id: str
    principal: Principal | None = None
    admitted: bool = False
    received: int = 0     # bytes of request messages
    sent: int = 0         # bytes of response messages
    code: str = "OK"
    ended: bool = False   # on_end has run: the status is known
    metrics: MethodMetrics | None = None
    span: RpcSpan | None = None


_current: ContextVar[HttpCall] = ContextVar("http_call")


def received(size: int) -> None:
    """A request message of `size` bytes was decoded (server.http.codecs)."""
    call = _current.get(None)
    if call is not None:
        call.received += size


def sent(size: int) -> None:
    """A response message of `size` bytes was encoded (server.http.codecs)."""
    call = _current.get(None)
    if call is None:
        return
    if not call.ended:
        call.sent += size
    elif call.metrics is not None:    # a unary response, encoded after on_end
        call.metrics.response_size(call.code, size)


def caller() -> Principal:
    """The principal of the running call (set by `on_start`, which refuses
    the call when it cannot prove one)."""
    principal = _current.get().principal
    assert principal is not None
    return principal


def _peer(address: str | None) -> str:
    """`ipv4:127.0.0.1:51234` or `ipv6:[::1]:51234`, as grpc names a peer."""
    if not address:
        return ""
    host, _, port = address.rpartition(":")
    return f"ipv6:[{host}]:{port}" if ":" in host else f"ipv4:{host}:{port}"


class CallInterceptor:
    """Admission, deadline, authentication, error mapping and the access log
    of every HTTP call (a connectrpc MetadataInterceptor)."""

    def __init__(self, calls: Calls, authenticator: Authenticator) -> None:
        self.calls = calls
        self.authenticator = authenticator

    async def on_start(self, ctx: RequestContext[object, object]) -> HttpCall:
        method = ctx.method
        call = self.open(
            f"/{method.service_name}/{method.name}", method.stream_type is StreamType.SERVER_STREAM,
            ctx.request_headers, ctx.client_address,
        )
        ctx.response_headers["x-request-id"] = call.request_id
        await self.prove(call, ctx.request_headers, ctx.timeout_ms)
        return call

    def open(self, method: str, stream: bool, headers: Mapping[str, str], client_address: str | None) -> HttpCall:
        """A call of `method` begins (steps 1 and 6). With `prove` and `end`,
        also what the requests of this port that are no Connect call go
        through (GET /builds/{id}/logs.txt, server.http.log_download)."""
        call = HttpCall(method, stream, time.perf_counter(), _peer(client_address), request_id(headers.get("x-request-id")))
        _current.set(call)
        metrics, tracer = self.calls.metrics, self.calls.tracer
        if metrics is not None:
            call.metrics = metrics.method(call.method, "http", call.stream)
            call.metrics.started.inc()
        if tracer is not None:
            call.span = tracer.start(call.method, "http", headers, stream=call.stream)
        return call

    async def prove(self, call: HttpCall, headers: Mapping[str, str], timeout_ms: float | None) -> None:
        """Steps 2 and 3: admit the call and authenticate its caller; or end
        the call and raise the ConnectError that answers it."""
        try:
            self.calls.admit(call.stream)
            call.admitted = True
            if call.metrics is not None and call.metrics.open is not None:
                call.metrics.open.inc()
            if timeout_ms is not None:
                call_deadline.set(time.monotonic() + timeout_ms / 1000)
            call.principal = await self.authenticator.authenticate(headers.get("authorization"))
        except Exception as error:
            # connectrpc ends only interceptors whose on_start returned.
            failure = self.end(call, error)
            assert failure is not None
            raise failure from None
        except BaseException:
            self.end(call, ConnectError(Code.CANCELED, "Request was cancelled"))
            raise

    async def on_end(self, call: HttpCall, ctx: RequestContext[object, object], error: Exception | None) -> None:
        failure = self.end(call, error)
        if failure is not None:
            raise failure

    def end(self, call: HttpCall, error: Exception | None) -> ConnectError | None:
        """Release the call, write its access log line, and return the error
        that answers it (None for a success)."""
        seconds = time.perf_counter() - call.started
        code, failure = "OK", None
        if error is not None:
            code, failure = self._settle(call, error)
        call.code, call.ended = code, True
        metrics, span = call.metrics, call.span
        if call.admitted:
            call.admitted = False
            self.calls.release(call.stream)
            if metrics is not None and metrics.open is not None:
                metrics.open.dec()
        if metrics is not None:
            later = code == "OK" and not call.stream  # the response is encoded after this (sent())
            metrics.finished(code, seconds, call.received, None if later else call.sent)
        if span is not None:
            span.end(code, None if failure is None else failure.code.value)
        log_call(call.method, code, seconds, call.peer, call.request_id, call.principal, transport="http",
                 trace_id=None if span is None else span.trace_id)
        return failure

    def _settle(self, call: HttpCall, error: Exception) -> tuple[str, ConnectError]:
        if isinstance(error, ConnectError):
            if isinstance(error.__cause__, DomainError):
                error = error.__cause__        # a request that did not decode (server.http.codecs)
            elif error.code is Code.CANCELED and self.calls.draining:
                error = Unavailable(SHUTTING_DOWN)   # cut at the end of the shutdown grace period
            else:
                return _NAMES[error.code], error  # connectrpc's own: deadline, client gone, bad framing
        status = settle(error, self.calls, call.method, call.request_id)
        assert status is not None  # settle() is None only for a CancelledError, which is no Exception
        return code_pb2.Code.Name(status.code), connect_error(status)
