"""Serves the core's services over HTTP (connectrpc), from the service
descriptors, as server.rpc.registry does over gRPC: each method is its core
`Endpoint` (server.core.calls), so both transports call the same functions
under the same access rules.

The whole adapter per call: the principal `on_start` proved
(server.http.calls), `endpoint.admit(principal)`, then the core function.
A stream's items that the core already serialized (bytes) go out as they
are to a binary caller and are parsed with the method's output message for
a JSON one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import aclosing
from types import ModuleType
from typing import Any

from connectrpc.method import IdempotencyLevel, MethodInfo, StreamType
from connectrpc.request import RequestContext
from connectrpc.server import Endpoint as ConnectEndpoint
from google.protobuf import descriptor_pb2, message_factory
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor

from server.core.calls import Endpoint, endpoint
from server.core.deps import Deps
from server.http.calls import caller

_IDEMPOTENCY = {
    descriptor_pb2.MethodOptions.NO_SIDE_EFFECTS: IdempotencyLevel.NO_SIDE_EFFECTS,
    descriptor_pb2.MethodOptions.IDEMPOTENT: IdempotencyLevel.IDEMPOTENT,
}


def _unary(endpoint: Endpoint, deps: Deps) -> Callable[[Any, RequestContext[Any, Any]], Awaitable[Any]]:
    async def unary(request: Any, ctx: RequestContext[Any, Any]) -> Any:
        return await endpoint.call(deps, caller(), request)

    return unary


def _stream(
    endpoint: Endpoint, deps: Deps, output: type[Any]
) -> Callable[[Any, RequestContext[Any, Any]], AsyncIterator[Any]]:
    async def stream(request: Any, ctx: RequestContext[Any, Any]) -> AsyncIterator[Any]:
        responses = endpoint.call(deps, caller(), request)
        as_json = "json" in ctx.request_headers.get("content-type", "")
        # aclosing: a caller that goes away closes the core's generator now
        # (its follow ends and leaves the feed), not when it is collected.
        async with aclosing(responses):
            async for response in responses:
                yield output.FromString(response) if as_json and isinstance(response, bytes) else response

    return stream


def _method_info(service: ServiceDescriptor, method: MethodDescriptor) -> MethodInfo[Any, Any]:
    return MethodInfo(
        name=method.name,
        service_name=service.full_name,
        input=message_factory.GetMessageClass(method.input_type),
        output=message_factory.GetMessageClass(method.output_type),
        idempotency_level=_IDEMPOTENCY.get(method.GetOptions().idempotency_level, IdempotencyLevel.UNKNOWN),
        stream_type=StreamType.SERVER_STREAM if method.server_streaming else StreamType.UNARY,
    )


def endpoints(services: Iterable[tuple[ServiceDescriptor, ModuleType]], deps: Deps) -> dict[str, Any]:
    """Every method of `services`, by its URL path (/buildplatform.v1.BuildService/GetBuild)."""
    served: dict[str, Any] = {}
    for service, core in services:
        for method in service.methods:
            if method.client_streaming:
                raise LookupError(f"{method.full_name}: client streams are not served over HTTP")
            info = _method_info(service, method)
            bound = endpoint(core, method)
            path = f"/{service.full_name}/{method.name}"
            if method.server_streaming:
                served[path] = ConnectEndpoint.server_stream(info, _stream(bound, deps, info.output))
            else:
                served[path] = ConnectEndpoint.unary(info, _unary(bound, deps))
    return served
