"""The domain error tree. The rpc layer maps each class to one gRPC status
(server.rpc.errors); the store translates database errors into these.

DomainError
 +-- InvalidArgument      INVALID_ARGUMENT, with one violation per bad field
 +-- NotFound             NOT_FOUND
 +-- AlreadyExists        ALREADY_EXISTS
 +-- FailedPrecondition   FAILED_PRECONDITION
 |    +-- InvalidTransition  a move the build state machine refuses
 +-- Aborted              ABORTED: a stale etag lost an optimistic-concurrency race
 +-- Unavailable          UNAVAILABLE: retry, possibly on another replica
 +-- ResourceExhausted    RESOURCE_EXHAUSTED: the process is full; retry after a pause
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


class DomainError(Exception):
    """Base of every error a caller can cause."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True, slots=True)
class FieldViolation:
    field: str
    description: str


class InvalidArgument(DomainError):
    def __init__(self, violations: list[FieldViolation]) -> None:
        assert violations
        first = violations[0]
        more = f" (and {len(violations) - 1} more)" if len(violations) > 1 else ""
        super().__init__(f"{first.field}: {first.description}{more}")
        self.violations = violations

    @classmethod
    def one(cls, field: str, description: str) -> InvalidArgument:
        return cls([FieldViolation(field, description)])


class NotFound(DomainError):
    def __init__(self, resource: str, key: str, *, field: str = "id") -> None:
        super().__init__(f"{resource} {key!r} not found")
        self.resource = resource
        self.key = key
        self.field = field


class AlreadyExists(DomainError):
    def __init__(self, resource: str, field: str, value: str) -> None:
        super().__init__(f"a {resource} with {field} {value!r} already exists")
        self.resource = resource
        self.field = field
        self.value = value


class FailedPrecondition(DomainError):
    """The request is valid but the system is not in a state that allows it.

    `reason` is a stable UPPER_SNAKE code and `metadata` machine-readable
    context; the rpc layer sends both as google.rpc.ErrorInfo.
    """

    def __init__(
        self, message: str, *, reason: str, metadata: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.metadata = dict(metadata or {})


class InvalidTransition(FailedPrecondition):
    def __init__(self, current: str, requested: str, why: str = "") -> None:
        message = f"build status cannot change from {current} to {requested}"
        super().__init__(
            f"{message}: {why}" if why else message,
            reason="INVALID_STATUS_TRANSITION",
            metadata={"current_status": current, "requested_status": requested},
        )


class Aborted(DomainError):
    def __init__(self, resource: str, key: str, etag: str, current: str) -> None:
        super().__init__(
            f"{resource} {key!r} was changed concurrently: etag {etag!r} is stale "
            f"(current etag {current!r}); re-read it and retry"
        )
        self.current_etag = current


class Unavailable(DomainError):
    """The call cannot be served here now; the same call may succeed on retry."""

    def __init__(self, message: str, *, retry_after: float = 0.0, metadata: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.metadata = dict(metadata or {})


class ResourceExhausted(DomainError):
    """The process works on as many calls as it may (admission control)."""

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after
