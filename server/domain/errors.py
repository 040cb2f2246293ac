"""The domain error tree. Every transport maps each class to one status
(server.transport.status); the store translates database errors into these.

DomainError
 +-- InvalidArgument      INVALID_ARGUMENT, with one violation per bad field
 |                        (the first 20, clipped, then how many more)
 +-- NotFound             NOT_FOUND
 +-- AlreadyExists        ALREADY_EXISTS
 +-- FailedPrecondition   FAILED_PRECONDITION
 |    +-- InvalidTransition  a move the build state machine refuses
 +-- Aborted              ABORTED: a concurrency conflict; re-read and retry
 |    +-- EtagMismatch    a stale etag lost an optimistic-concurrency race
 +-- Unavailable          UNAVAILABLE: retry, possibly on another replica
 +-- DataLoss             DATA_LOSS: stored data is missing or corrupt (an archived
 |                        chunk); ErrorInfo names what is lost
 +-- ResourceExhausted    RESOURCE_EXHAUSTED: the process is full; retry after a pause
 +-- Unauthenticated      UNAUTHENTICATED: no valid credential; `reason` says which problem
 +-- PermissionDenied     PERMISSION_DENIED: a valid principal without the right
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


# What one INVALID_ARGUMENT carries, so that its status (message and
# BadRequest details travel as HTTP/2 trailers) stays far below the 8 KiB of
# metadata a default gRPC client accepts, however many entries of a batch are
# bad and however long the offending values are.
MAX_VIOLATIONS = 20
MAX_FIELD_CHARS = 100
MAX_DESCRIPTION_CHARS = 200


def clip(text: str, limit: int) -> str:
    """`text`, shortened to `limit` characters with an ellipsis when longer."""
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


class InvalidArgument(DomainError):
    """One violation per bad field: the first MAX_VIOLATIONS of them, each
    clipped, and then one saying how many more were found."""

    def __init__(self, violations: list[FieldViolation]) -> None:
        assert violations
        kept = [
            FieldViolation(clip(v.field, MAX_FIELD_CHARS), clip(v.description, MAX_DESCRIPTION_CHARS))
            for v in violations[:MAX_VIOLATIONS]
        ]
        hidden = len(violations) - len(kept)
        if hidden:
            kept.append(
                FieldViolation("request", f"{hidden} more invalid fields are not listed; fix those above and retry")
            )
        first = kept[0]
        more = f" (and {len(violations) - 1} more)" if len(violations) > 1 else ""
        super().__init__(f"{first.field}: {first.description}{more}")
        self.violations = kept
        self.total = len(violations)

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
    """A concurrency conflict (google.rpc: ABORTED, retry at a higher level:
    re-read, then retry): a serialization failure or a deadlock that
    PostgreSQL broke. `reason` and `metadata` travel as ErrorInfo."""

    def __init__(self, message: str, *, reason: str = "CONCURRENT_CHANGE", metadata: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.metadata = dict(metadata or {})


class EtagMismatch(Aborted):
    def __init__(self, resource: str, key: str, etag: str, current: str) -> None:
        super().__init__(
            f"{resource} {key!r} was changed concurrently: etag {etag!r} is stale "
            f"(current etag {current!r}); re-read it and retry",
            reason="ETAG_MISMATCH",
            metadata={"current_etag": current},
        )
        self.current_etag = current


class Unavailable(DomainError):
    """The call cannot be served here now; the same call may succeed on retry."""

    def __init__(self, message: str, *, retry_after: float = 0.0, metadata: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.metadata = dict(metadata or {})


class DataLoss(DomainError):
    """Data the service stored is missing or fails its checksum: retrying
    does not help, an operator must restore it. `reason` and `metadata`
    (what is lost: build, chunk, object) travel as ErrorInfo."""

    def __init__(self, message: str, *, reason: str, metadata: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.metadata = dict(metadata or {})


class ResourceExhausted(DomainError):
    """The process works on as many calls as it may (admission control)."""

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


# Why a credential was refused: a stable code, and the message sent to the
# caller. No message ever quotes the credential or a secret.
UNAUTHENTICATED_REASONS: dict[str, str] = {
    "MISSING": "no credential: send `authorization: Bearer <token>`",
    "MALFORMED": "the credential is malformed: send `authorization: Bearer <token>`",
    "EXPIRED": "the credential has expired: get a fresh one and retry",
    "NOT_YET_VALID": "the credential is not valid yet (nbf/iat in the future): check the clocks",
    "WRONG_ISSUER": "the token was issued by another issuer than AUTH_JWT_ISSUER",
    "WRONG_AUDIENCE": "the token is for another audience than AUTH_JWT_AUDIENCE",
    "WRONG_AUTHORIZED_PARTY": "the token's authorized party (azp) is not one of AUTH_AUTHORIZED_PARTIES",
    "UNKNOWN_KEY": "the token is signed with a key (kid) the identity provider does not publish",
    "BAD_SIGNATURE": "the token's signature does not verify",
    "UNSUPPORTED": "this kind of credential is not accepted by this server",
    "UNKNOWN_TOKEN": "the token is unknown: it was never issued here, or was mistyped",
    "REVOKED": "the token was revoked: ask an operator for a new one",
    "UNKNOWN_CERTIFICATE": "no bearer token, and the client certificate names no service token: send a token, "
    "or create one named like the certificate (`python -m server tokens create <name> --scopes ...`)",
    "NO_USER": "the session's user has no User here: create it first (CreateUser with its clerk_id)",
}


class Unauthenticated(DomainError):
    """The call carries no credential, or one that is not valid. `reason` is
    a key of UNAUTHENTICATED_REASONS; `detail` may add what was checked
    (never the credential itself)."""

    def __init__(self, reason: str, detail: str = "", *, metadata: Mapping[str, str] | None = None) -> None:
        message = UNAUTHENTICATED_REASONS[reason]
        super().__init__(f"{message} ({detail})" if detail else message)
        self.reason = reason
        self.metadata = dict(metadata or {})


class PermissionDenied(DomainError):
    """A valid principal that may not do this, whether or not the resource
    exists (AIP-211)."""

    def __init__(self, message: str, *, permission: str = "") -> None:
        super().__init__(message)
        self.permission = permission
