"""The interceptor chain. There is one interceptor, because its three jobs
share one measurement and must happen in this order around the handler:

1. request id: taken from the `x-request-id` metadata or generated; it is
   in every log line of the call and in the message of an INTERNAL status;
2. error mapping: a DomainError becomes its precise status
   (server.rpc.errors); anything unexpected is logged with its traceback
   and answered INTERNAL with the request id, never with the traceback;
3. access log: one structured line per RPC with method, status code,
   duration and peer, written after the status is known.

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
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from server.domain.errors import DomainError, InvalidArgument
from server.rpc.errors import to_status
from server.store.db import DatabaseUnavailable

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


class ServerInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None:
            return None
        method: str = details.method
        deserializer = _tolerant(handler.request_deserializer)
        if handler.unary_unary is not None:
            return handler._replace(
                unary_unary=_unary(method, handler.unary_unary), request_deserializer=deserializer
            )
        if handler.unary_stream is not None:
            return handler._replace(
                unary_stream=_stream(method, handler.unary_stream), request_deserializer=deserializer
            )
        return handler


async def _fail(
    error: Exception, context: grpc.aio.ServicerContext[Any, Any], method: str, request_id: str
) -> str:
    """Abort the call with the status for `error`; return the status name."""
    if not isinstance(error, EXPECTED):
        error_log.error(
            "unhandled error in %s", method, exc_info=error, extra={"request_id": request_id}
        )
    status = to_status(error, request_id)
    await context.abort_with_status(status)
    return str(status.code.name)  # pragma: no cover - abort_with_status raises


def _access(method: str, code: str, started: float, peer: str, request_id: str) -> None:
    if log.isEnabledFor(logging.INFO):
        log.info(
            "rpc",
            extra={
                "method": method,
                "code": code,
                "duration_ms": round((time.perf_counter() - started) * 1000, 3),
                "peer": peer,
                "request_id": request_id,
            },
        )


def _code_of(error: BaseException, context: Any) -> str:
    if isinstance(error, asyncio.CancelledError):
        return "CANCELLED"
    code = context.code()
    return code.name if isinstance(code, grpc.StatusCode) else str(to_status(error, "").code.name)


def _unary(method: str, behavior: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    async def wrapper(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        started = time.perf_counter()
        request_id = _request_id(context)
        # Read now: grpc.aio crashes the process (SIGSEGV) when peer() is
        # called on a call that was cancelled and torn down.
        peer = context.peer()
        code = "OK"
        try:
            _check_decoded(request)
            return await behavior(request, context)
        except BaseException as error:
            code = _code_of(error, context)
            if isinstance(error, Exception) and not isinstance(error, grpc.aio.AbortError):
                await _fail(error, context, method, request_id)
            raise
        finally:
            _access(method, code, started, peer, request_id)

    return wrapper


def _stream(method: str, behavior: Callable[..., AsyncIterator[Any]]) -> Callable[..., AsyncIterator[Any]]:
    async def wrapper(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
        started = time.perf_counter()
        request_id = _request_id(context)
        # Read now: grpc.aio crashes the process (SIGSEGV) when peer() is
        # called on a call that was cancelled and torn down.
        peer = context.peer()
        code = "OK"
        try:
            _check_decoded(request)
            async for response in behavior(request, context):
                yield response
        except BaseException as error:
            code = _code_of(error, context)
            if isinstance(error, Exception) and not isinstance(error, grpc.aio.AbortError):
                await _fail(error, context, method, request_id)
            raise
        finally:
            _access(method, code, started, peer, request_id)

    return wrapper
