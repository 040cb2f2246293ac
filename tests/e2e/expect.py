"""Reading gRPC errors the way a client does: status code plus google.rpc details."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import psycopg
from google.rpc import error_details_pb2
from grpc_status import rpc_status


@dataclass
class Failure:
    code: grpc.StatusCode
    message: str
    violations: dict[str, str] = field(default_factory=dict)
    reason: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    resource_type: str = ""
    retry_delay: float | None = None  # google.rpc.RetryInfo, in seconds


def failure(call: Callable[[Any], Any], request: Any) -> Failure:
    """Call and return the failure; the test fails if the call succeeds."""
    try:
        call(request)
    except grpc.RpcError as error:
        return read(error)
    raise AssertionError(f"expected the call to fail, it succeeded: {request}")


def read(error: grpc.RpcError) -> Failure:
    result = Failure(code=error.code(), message=error.details() or "")
    status = rpc_status.from_call(error)
    if status is not None:
        for detail in status.details:
            if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                result.violations.update({v.field: v.description for v in bad.field_violations})
            elif detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                result.reason, result.metadata = info.reason, dict(info.metadata)
            elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                retry = error_details_pb2.RetryInfo()
                detail.Unpack(retry)
                result.retry_delay = retry.retry_delay.ToTimedelta().total_seconds()
            elif detail.Is(error_details_pb2.ResourceInfo.DESCRIPTOR):
                resource = error_details_pb2.ResourceInfo()
                detail.Unpack(resource)
                result.resource_type = resource.resource_type
    assert "Traceback" not in result.message, result.message
    return result


def invalid(call: Callable[[Any], Any], request: Any, field_name: str) -> Failure:
    """The call fails with INVALID_ARGUMENT and BadRequest names `field_name`."""
    got = failure(call, request)
    assert got.code == grpc.StatusCode.INVALID_ARGUMENT, (got.code, got.message)
    assert field_name in got.violations, (field_name, got.violations)
    return got


def code_of(call: Callable[[Any], Any], request: Any) -> grpc.StatusCode:
    return failure(call, request).code


def sql_count(database_url: str, query: str, *params: Any) -> int:
    """One integer from the test database, read directly, past the API."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute(query, params).fetchone()
    assert row is not None
    return int(row[0])


def race(count: int, action: Callable[[int], Any]) -> list[tuple[int, Any]]:
    """Run action(i) in `count` threads released together; (i, result or RpcError)."""
    barrier = threading.Barrier(count)
    results: list[tuple[int, Any]] = []

    def run(index: int) -> None:
        barrier.wait()
        try:
            results.append((index, action(index)))
        except grpc.RpcError as error:
            results.append((index, error))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def varint(value: int) -> bytes:
    """The protobuf wire encoding of a non-negative integer."""
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def length_delimited(number: int, payload: bytes) -> bytes:
    """Field `number` holding `payload` (bytes, a string or a message), encoded
    by hand: for requests the Python runtime refuses to build."""
    return varint(number << 3 | 2) + varint(len(payload)) + payload
