"""The interceptor chain. There is one interceptor, because its jobs share
one measurement and must happen in this order around the handler:

1. request id: taken from the `x-request-id` metadata or generated; it is
   in every log line of the call and in the message of an INTERNAL status;
2. admission: a process works on at most MAX_CONCURRENT_CALLS unary calls
   and MAX_STREAMS streams at once, over both transports (server.transport.calls);
   the excess is refused at once with RESOURCE_EXHAUSTED and RetryInfo instead
   of queueing for seconds. The call's deadline becomes
   `server.store.db.call_deadline`, the bound of every database wait it causes;
3. authentication: every call but health (and reflection, unless
   REFLECTION=false) must prove its principal (server.rpc.principals);
   a missing or bad credential is UNAUTHENTICATED before any core code runs;
4. error mapping: a DomainError becomes its precise status
   (server.transport.status, the map the HTTP transport uses too); anything
   unexpected is logged with its traceback and answered INTERNAL with the
   request id, never with the traceback;
5. access log: one structured line per RPC with method, status code,
   duration, peer, the principal (`kind:id`) (and, with mTLS, the client certificate's identity,
   server.rpc.peer), written after the status is known. The duration runs
   from the moment the call reached Python (before the handler lookup), so
   time spent queueing in the server is in it.

At shutdown, `Calls.drain()` lets running calls finish for the grace period
and then answers what is left with UNAVAILABLE (retryable), never leaving a
call to be CANCELLED by the server's stop.

With METRICS_ADDRESS set, the same measurement feeds the RPC metrics
(server.telemetry.metrics: calls started, duration by status, message bytes,
streams open); with tracing on, the call has a span that joins the caller's
trace (`traceparent` metadata) and is current while the handler runs, and
the access log line names its trace. The wrapper serializes each response
itself (the handler's own serializer, once) so that the bytes a call sent
are known when its metrics are recorded; grpc then sends those bytes as
they are.

It also makes the request deserializer tolerant: bytes that are not a valid
request message (bad UTF-8 in a string field, a corrupt wire format) would
otherwise fail inside grpc as UNKNOWN with the exception's class in the
message; here they reach the wrapper, which answers INVALID_ARGUMENT.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf.message import DecodeError
from google.rpc import code_pb2
from grpc_status import rpc_status

from server.domain.access import Principal
from server.domain.errors import InvalidArgument
from server.rpc.peer import PeerIdentity, peer_identity
from server.rpc.principals import Gate
from server.store.db import call_deadline
from server.transport.calls import Calls, log_call, request_id, settle

if TYPE_CHECKING:
    from server.telemetry.metrics import MethodMetrics
    from server.telemetry.tracing import RpcSpan


def _request_id(metadata: Any) -> str:
    for key, value in metadata:
        if key == "x-request-id" and isinstance(value, str):
            return request_id(value)
    return request_id(None)


def _as_is(data: bytes) -> bytes:
    """The response serializer once the wrapper has serialized the response."""
    return data


class _Undecodable:
    """Stands in for a request whose bytes did not parse."""

    __slots__ = ("error",)

    def __init__(self, error: DecodeError) -> None:
        self.error = error


def _tolerant(call: _Call, deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None

    def deserialize(data: bytes) -> Any:
        call.received += len(data)
        try:
            return deserializer(data)
        except DecodeError as error:
            return _Undecodable(error)

    return deserialize


def _check_decoded(request: Any) -> None:
    if isinstance(request, _Undecodable):
        raise InvalidArgument.one("request", f"is not a valid protobuf message: {request.error}")


class ServerInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    def __init__(
        self, calls: Calls | None = None, *, gate: Gate | None = None, client_certificates: bool = False
    ) -> None:
        self.calls = calls or Calls(max_unary=1 << 30, max_streams=1 << 30)
        # Who calls (server.rpc.principals); None serves without authentication
        # (only the transport's own tests do).
        self.gate = gate
        # Only with mTLS does a call carry a certificate worth reading; without
        # it the auth context is not read at all (it costs a dict per call).
        self.client_certificates = client_certificates

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        arrived = time.perf_counter()
        handler = await continuation(details)
        if handler is None:
            return None
        method: str = details.method
        gate = None if self.gate is None or self.gate.is_open(method) else self.gate
        call = _Call(method, arrived, self.calls, gate, self.client_certificates)
        metrics = self.calls.metrics
        if metrics is not None:
            call.metrics = metrics.method(method, "grpc", handler.unary_unary is None)
        deserializer = _tolerant(call, handler.request_deserializer)
        serialize = handler.response_serializer or _as_is
        if handler.unary_unary is not None:
            return handler._replace(unary_unary=_unary(call, handler.unary_unary, serialize),
                                    request_deserializer=deserializer, response_serializer=_as_is)
        if handler.unary_stream is not None:
            return handler._replace(unary_stream=_stream(call, handler.unary_stream, serialize),
                                    request_deserializer=deserializer, response_serializer=_as_is)
        if handler.stream_stream is not None:
            # Only reflection is bidirectional: authenticated when REFLECTION=false.
            return handler._replace(stream_stream=_stream(call, handler.stream_stream, serialize),
                                    response_serializer=_as_is)
        return handler


@dataclass(slots=True)
class _Call:
    """What the wrapper of one call knows before it runs, and learns on the way."""

    method: str
    started: float
    calls: Calls
    gate: Gate | None
    certificates: bool
    request_id: str = ""
    peer: str = ""
    cert: PeerIdentity | None = None
    principal: Principal | None = None
    code: str = "OK"
    admitted: bool = False
    received: int = 0     # bytes of request messages
    sent: int = 0         # bytes of response messages
    metrics: MethodMetrics | None = None
    span: RpcSpan | None = None

    async def begin(self, context: Any, request: Any, stream: bool) -> None:
        """Count the call, start its span, read the peer, admit, set the
        deadline, authenticate, check the request."""
        metadata = context.invocation_metadata() or ()
        self.request_id = _request_id(metadata)
        if self.metrics is not None:
            self.metrics.started.inc()
        if self.calls.tracer is not None:
            self.span = self.calls.tracer.start(self.method, "grpc", dict(metadata), stream=stream)
        # Read at the start of a call: grpc.aio crashes the process (SIGSEGV)
        # when peer() is called on a call that was cancelled and torn down.
        self.peer = context.peer()
        self.cert = peer_identity(context) if self.certificates else None
        self.calls.admit(stream)
        self.admitted = True
        if self.metrics is not None and self.metrics.open is not None:
            self.metrics.open.inc()
        remaining = context.time_remaining()
        if remaining is not None:
            call_deadline.set(time.monotonic() + remaining)
        if self.gate is not None:
            # Before the request is looked at: an unauthenticated caller learns nothing.
            self.principal = await self.gate.authenticate(context, self.cert)
        _check_decoded(request)

    async def fail(self, error: BaseException, context: Any) -> None:
        self.code, status = _outcome(error, self.calls, context, self.method, self.request_id)
        if status is not None:
            await context.abort_with_status(status)

    def end(self, stream: bool) -> None:
        seconds = time.perf_counter() - self.started
        metrics, span = self.metrics, self.span
        if self.admitted:
            self.calls.release(stream)
            if metrics is not None and metrics.open is not None:
                metrics.open.dec()
        if metrics is not None:
            metrics.finished(self.code, seconds, self.received, self.sent)
        if span is not None:
            span.end(self.code)
        log_call(self.method, self.code, seconds, self.peer, self.request_id, self.principal, self.cert,
                 trace_id=None if span is None else span.trace_id)


def _outcome(
    error: BaseException, calls: Calls, context: Any, method: str, request_id: str
) -> tuple[str, grpc.Status | None]:
    """The status name for the access log, and the status to answer with
    (None when the call is already answered or the client is gone)."""
    if isinstance(error, grpc.aio.AbortError) or not isinstance(error, Exception | asyncio.CancelledError):
        code = context.code()
        if isinstance(code, grpc.StatusCode):
            return code.name, None
        # grpc closes a stream's generator (GeneratorExit at its yield) when the
        # call ended from outside while a message was on its way: the client
        # went away, as a cancellation of the task says otherwise.
        return ("CANCELLED" if isinstance(error, GeneratorExit) else "UNKNOWN"), None
    status = settle(error, calls, method, request_id)
    if status is None:
        return "CANCELLED", None
    return code_pb2.Code.Name(status.code), rpc_status.to_status(status)


def _unary(
    call: _Call, behavior: Callable[..., Awaitable[Any]], serialize: Callable[[Any], bytes]
) -> Callable[..., Awaitable[bytes]]:
    async def wrapper(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        try:
            await call.begin(context, request, stream=False)
            data = serialize(await behavior(request, context))
            call.sent = len(data)
            return data
        except BaseException as error:
            await call.fail(error, context)
            raise
        finally:
            call.end(stream=False)

    return wrapper


def _stream(
    call: _Call, behavior: Callable[..., AsyncIterator[Any]], serialize: Callable[[Any], bytes]
) -> Callable[..., AsyncIterator[bytes]]:
    async def wrapper(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[bytes]:
        try:
            await call.begin(context, request, stream=True)
            async for response in behavior(request, context):
                data = serialize(response)
                call.sent += len(data)
                yield data
        except BaseException as error:
            await call.fail(error, context)
            raise
        finally:
            call.end(stream=True)

    return wrapper
