"""The interceptor chain. There is one interceptor, because its jobs share
one measurement and must happen in this order around the handler:

1. request id: taken from the `x-request-id` metadata or generated; it is
   in every log line of the call and in the message of an INTERNAL status;
2. admission: a process works on at most MAX_CONCURRENT_CALLS unary calls
   and MAX_STREAMS streams at once; the excess is refused at once with
   RESOURCE_EXHAUSTED and RetryInfo instead of queueing for seconds. The
   call's deadline becomes `server.store.db.call_deadline`, the bound of
   every database wait it causes;
3. error mapping: a DomainError becomes its precise status
   (server.rpc.errors); anything unexpected is logged with its traceback
   and answered INTERNAL with the request id, never with the traceback;
4. access log: one structured line per RPC with method, status code,
   duration and peer (and, with mTLS, the client certificate's identity,
   server.rpc.peer), written after the status is known. The duration runs
   from the moment the call reached Python (before the handler lookup), so
   time spent queueing in the server is in it.

At shutdown, `Calls.drain()` lets running calls finish for the grace period
and then answers what is left with UNAVAILABLE (retryable), never leaving a
call to be CANCELLED by the server's stop.

It also makes the request deserializer tolerant: bytes that are not a valid
request message (bad UTF-8 in a string field, a corrupt wire format) would
otherwise fail inside grpc as UNKNOWN with the exception's class in the
message; here they reach the wrapper, which answers INVALID_ARGUMENT.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from server.domain.errors import DomainError, InvalidArgument, ResourceExhausted, Unavailable
from server.rpc.errors import to_status
from server.rpc.peer import PeerIdentity, peer_identity
from server.store.db import DatabaseUnavailable, call_deadline

log = logging.getLogger("server.access")
error_log = logging.getLogger("server.rpc")

EXPECTED = (DomainError, DatabaseUnavailable)


def _request_id(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == "x-request-id" and isinstance(value, str) and value.isprintable() and len(value) <= 128:
            return value
    return os.urandom(8).hex()


class _Undecodable:
    """Stands in for a request whose bytes did not parse."""

    __slots__ = ("error",)

    def __init__(self, error: DecodeError) -> None:
        self.error = error


def _tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None

    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except DecodeError as error:
            return _Undecodable(error)

    return deserialize


def _check_decoded(request: Any) -> None:
    if isinstance(request, _Undecodable):
        raise InvalidArgument.one("request", f"is not a valid protobuf message: {request.error}")


@dataclass(slots=True)
class _Limit:
    """How many calls of one kind a process works on, and how many it may."""

    maximum: int
    says: str     # what a refusal says, with {count}
    count: int = 0


class Calls:
    """The calls this process works on: admission limits, and the drain at shutdown."""

    RETRY_AFTER = 1.0  # seconds a refused caller is advised to wait

    def __init__(self, *, max_unary: int, max_streams: int) -> None:
        self.unary = _Limit(max_unary, "this server is working on {count} calls, its limit (MAX_CONCURRENT_CALLS)")
        self.streams = _Limit(max_streams, "this server has {count} streams open, its limit (MAX_STREAMS)")
        self.running: set[asyncio.Task[Any]] = set()
        self.draining = False

    def admit(self, stream: bool) -> None:
        """Count the call in, or raise ResourceExhausted."""
        limit = self.streams if stream else self.unary
        if limit.count >= limit.maximum:
            raise ResourceExhausted(
                limit.says.format(count=limit.count) + "; retry after a pause, or on another replica",
                retry_after=self.RETRY_AFTER,
            )
        limit.count += 1
        task = asyncio.current_task()
        if task is not None:
            self.running.add(task)

    def release(self, stream: bool) -> None:
        (self.streams if stream else self.unary).count -= 1
        task = asyncio.current_task()
        if task is not None:
            self.running.discard(task)

    async def drain(self, grace: float) -> None:
        """Wait up to `grace` seconds for the running calls, then end the
        rest with UNAVAILABLE (the wrappers see `draining` and answer so)."""
        deadline = time.monotonic() + grace
        while self.running and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if not self.running:
            return
        self.draining = True
        left = list(self.running)
        for task in left:
            task.cancel()
        await asyncio.wait(left, timeout=2.0)


class ServerInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    def __init__(self, calls: Calls | None = None, *, client_certificates: bool = False) -> None:
        self.calls = calls or Calls(max_unary=1 << 30, max_streams=1 << 30)
        # Only with mTLS does a call carry a certificate worth logging; without
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
        deserializer = _tolerant(handler.request_deserializer)
        if handler.unary_unary is not None:
            return handler._replace(
                unary_unary=_unary(method, handler.unary_unary, self.calls, arrived, self.client_certificates),
                request_deserializer=deserializer,
            )
        if handler.unary_stream is not None:
            return handler._replace(
                unary_stream=_stream(method, handler.unary_stream, self.calls, arrived, self.client_certificates),
                request_deserializer=deserializer,
            )
        return handler


def _access(method: str, code: str, started: float, peer: str, request_id: str, cert: PeerIdentity | None) -> None:
    if log.isEnabledFor(logging.INFO):
        extra = {
            "method": method,
            "code": code,
            "duration_ms": round((time.perf_counter() - started) * 1000, 3),
            "peer": peer,
            "request_id": request_id,
        }
        if cert is not None:
            extra["client_cert"] = str(cert)
        log.info("rpc", extra=extra)


def _read_peer(context: Any, certificates: bool) -> tuple[str, PeerIdentity | None]:
    """The peer address, and the client certificate's identity when asked.
    Read at the start of a call: grpc.aio crashes the process (SIGSEGV)
    when peer() is called on a call that was cancelled and torn down."""
    return context.peer(), peer_identity(context) if certificates else None


SHUTTING_DOWN = "the server is shutting down; retry the call (on another replica)"


def _outcome(
    error: BaseException, calls: Calls, context: Any, method: str, request_id: str
) -> tuple[str, grpc.Status | None]:
    """The status name for the access log, and the status to answer with
    (None when the call is already answered or the client is gone)."""
    if isinstance(error, asyncio.CancelledError):
        if not calls.draining:
            return "CANCELLED", None
        # Cut at the end of the shutdown grace period: retryable, not CANCELLED.
        asyncio.current_task().uncancel()  # type: ignore[union-attr]
        error = Unavailable(SHUTTING_DOWN)
    if isinstance(error, grpc.aio.AbortError) or not isinstance(error, Exception):
        code = context.code()
        return (code.name if isinstance(code, grpc.StatusCode) else "UNKNOWN"), None
    if not isinstance(error, EXPECTED):
        error_log.error("unhandled error in %s", method, exc_info=error, extra={"request_id": request_id})
    status = to_status(error, request_id)
    return str(status.code.name), status


def _begin(context: Any) -> None:
    remaining = context.time_remaining()
    if remaining is not None:
        call_deadline.set(time.monotonic() + remaining)


def _unary(
    method: str, behavior: Callable[..., Awaitable[Any]], calls: Calls, started: float, certificates: bool
) -> Callable[..., Awaitable[Any]]:
    async def wrapper(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        request_id = _request_id(context)
        peer, cert = _read_peer(context, certificates)
        code = "OK"
        admitted = False
        try:
            calls.admit(stream=False)
            admitted = True
            _begin(context)
            _check_decoded(request)
            return await behavior(request, context)
        except BaseException as error:
            code, status = _outcome(error, calls, context, method, request_id)
            if status is not None:
                await context.abort_with_status(status)
            raise
        finally:
            if admitted:
                calls.release(stream=False)
            _access(method, code, started, peer, request_id, cert)

    return wrapper


def _stream(
    method: str, behavior: Callable[..., AsyncIterator[Any]], calls: Calls, started: float, certificates: bool
) -> Callable[..., AsyncIterator[Any]]:
    async def wrapper(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
        request_id = _request_id(context)
        peer, cert = _read_peer(context, certificates)
        code = "OK"
        admitted = False
        try:
            calls.admit(stream=True)
            admitted = True
            _begin(context)
            _check_decoded(request)
            async for response in behavior(request, context):
                yield response
        except BaseException as error:
            code, status = _outcome(error, calls, context, method, request_id)
            if status is not None:
                await context.abort_with_status(status)
            raise
        finally:
            if admitted:
                calls.release(stream=True)
            _access(method, code, started, peer, request_id, cert)

    return wrapper
