"""The one map from errors to google.rpc.Status (code, message, details),
for every transport: gRPC sends it as grpc-status, grpc-message and
grpc-status-details-bin; Connect and gRPC-Web as their error with the same
code, message and details.

  InvalidArgument     INVALID_ARGUMENT     BadRequest: one FieldViolation per bad field
  NotFound            NOT_FOUND            ResourceInfo
  AlreadyExists       ALREADY_EXISTS       ResourceInfo
  FailedPrecondition  FAILED_PRECONDITION  ErrorInfo: reason + metadata
  Aborted             ABORTED              ErrorInfo: reason (ETAG_MISMATCH + current etag,
                                           or CONCURRENT_CHANGE) + metadata
  Unavailable         UNAVAILABLE          RetryInfo when a pause helps; ErrorInfo with the
                                           resume cursor of a stream
  DatabaseUnavailable UNAVAILABLE          RetryInfo: the database is down, slow or saturated
  DataLoss            DATA_LOSS            ErrorInfo: reason (ARCHIVE_CHUNK_MISSING, ARCHIVE_CHUNK_CORRUPT)
                                           + what is lost (build_id, kind, chunk, object)
  ResourceExhausted   RESOURCE_EXHAUSTED   RetryInfo: the process is full (admission control)
  Unauthenticated     UNAUTHENTICATED      ErrorInfo: reason (MISSING, EXPIRED, REVOKED, ...), and
                                           a stream's resume cursor (after_sequence)
  PermissionDenied    PERMISSION_DENIED    ErrorInfo: reason PERMISSION_DENIED, the permission
  anything else       INTERNAL             a request id to find the traceback in the log;
                                           no traceback on the wire
"""

from __future__ import annotations

from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from server.domain import errors
from server.store.db import DatabaseUnavailable

DOMAIN = "buildplatform.v1"


def _status(code: int, message: str, *details: object) -> status_pb2.Status:
    packed = []
    for detail in details:
        container = any_pb2.Any()
        container.Pack(detail)  # type: ignore[arg-type]
        packed.append(container)
    return status_pb2.Status(code=code, message=message, details=packed)


def _retry(seconds: float) -> error_details_pb2.RetryInfo:
    delay = duration_pb2.Duration()
    delay.FromNanoseconds(int(seconds * 1e9))
    return error_details_pb2.RetryInfo(retry_delay=delay)


# The errors whose reason and metadata travel as google.rpc.ErrorInfo.
_WITH_REASON: tuple[
    tuple[type[errors.FailedPrecondition | errors.Aborted | errors.Unauthenticated | errors.DataLoss], int], ...
] = (
    (errors.FailedPrecondition, code_pb2.FAILED_PRECONDITION),
    (errors.Aborted, code_pb2.ABORTED),
    (errors.Unauthenticated, code_pb2.UNAUTHENTICATED),
    (errors.DataLoss, code_pb2.DATA_LOSS),
)


def to_status(error: BaseException, request_id: str) -> status_pb2.Status:
    """The status that answers `error`; INTERNAL (naming `request_id`) for
    anything that is not a domain error."""
    if isinstance(error, errors.InvalidArgument):
        return _status(
            code_pb2.INVALID_ARGUMENT,
            error.message,
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
                    for v in error.violations
                ]
            ),
        )
    if isinstance(error, errors.NotFound):
        return _status(
            code_pb2.NOT_FOUND,
            error.message,
            error_details_pb2.ResourceInfo(resource_type=error.resource, resource_name=error.key),
        )
    if isinstance(error, errors.AlreadyExists):
        return _status(
            code_pb2.ALREADY_EXISTS,
            error.message,
            error_details_pb2.ResourceInfo(
                resource_type=error.resource, description=f"{error.field} {error.value!r} is taken"
            ),
        )
    for kind, code in _WITH_REASON:
        if isinstance(error, kind):
            return _status(
                code, error.message, error_details_pb2.ErrorInfo(reason=error.reason, domain=DOMAIN, metadata=error.metadata)
            )
    if isinstance(error, errors.Unavailable):
        details: list[object] = []
        if error.retry_after:
            details.append(_retry(error.retry_after))
        if error.metadata:
            details.append(error_details_pb2.ErrorInfo(reason="UNAVAILABLE", domain=DOMAIN, metadata=error.metadata))
        return _status(code_pb2.UNAVAILABLE, error.message, *details)
    if isinstance(error, DatabaseUnavailable):
        return _status(code_pb2.UNAVAILABLE, str(error), _retry(1.0))
    if isinstance(error, errors.ResourceExhausted):
        return _status(code_pb2.RESOURCE_EXHAUSTED, error.message, _retry(error.retry_after))
    if isinstance(error, errors.PermissionDenied):
        return _status(
            code_pb2.PERMISSION_DENIED,
            error.message,
            error_details_pb2.ErrorInfo(
                reason="PERMISSION_DENIED", domain=DOMAIN, metadata={"permission": error.permission}
            ),
        )
    return _status(code_pb2.INTERNAL, f"internal error (request id {request_id})")
