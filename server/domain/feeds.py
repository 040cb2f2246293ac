"""The rules of an append to a build's logs or events, as pure functions.

The store appends in one statement that refuses by itself (the build is
finished, or first_sequence does not follow the last sequence), so that an
accepted append costs one round trip; when it refuses, it reads the facts
and `refusal` decides what the writer is told.
"""

from __future__ import annotations

from datetime import UTC, datetime

from server.domain.errors import DataLoss, FailedPrecondition
from server.domain.status import TERMINAL, BuildStatus
from server.domain.validation import EPOCH


def may_be_retry(first_sequence: int, count: int, last: int) -> bool:
    """Whether a refused batch names an offset (first_sequence) whose lines
    are all written: it is a retry if they are the same lines (the store
    compares them). A different batch that happens to name a used offset is
    not a retry, and is refused."""
    return bool(first_sequence) and first_sequence + count - 1 <= last


def refusal(kind: str, build_id: str, status: BuildStatus, last: int, first_sequence: int) -> FailedPrecondition:
    """Why an append that is not a retry was refused."""
    if status in TERMINAL:
        return FailedPrecondition(
            f"build {build_id!r} is {status}: a finished build takes no more {kind}s",
            reason="BUILD_FINISHED",
            metadata={"current_status": str(status), "last_sequence": str(last)},
        )
    return FailedPrecondition(
        f"first_sequence {first_sequence} does not follow the build's last {kind} "
        f"sequence {last} (expected {last + 1}), and the batch is not a retry of "
        f"{kind}s already written there",
        reason="SEQUENCE_MISMATCH",
        metadata={"last_sequence": str(last), "expected_first_sequence": str(last + 1)},
    )


def logs_expired(build_id: str, expire_time: datetime | None) -> FailedPrecondition:
    """A read of a build whose logs and events passed its project's
    retention: they are gone, the build itself stays."""
    when = (expire_time or EPOCH).astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
    return FailedPrecondition(
        f"the logs and events of build {build_id!r} expired at {when} (its project's log_retention_days) "
        "and were deleted; the build itself is still there (GetBuild)",
        reason="LOGS_EXPIRED",
        metadata={"expire_time": when},
    )


def chunk_lost(build_id: str, kind: str, chunk: int, key: str, *, corrupt: bool, detail: str) -> DataLoss:
    """An archived chunk that is not in the object store, or whose bytes
    fail their checksum: never a silent gap or a short answer."""
    what = "fails its checksum" if corrupt else "is missing from the object store"
    return DataLoss(
        f"chunk {chunk} of build {build_id!r}'s archived {kind}s {what} ({detail}): "
        f"the {kind}s it holds cannot be read; an operator must restore object {key!r} from a backup",
        reason="ARCHIVE_CHUNK_CORRUPT" if corrupt else "ARCHIVE_CHUNK_MISSING",
        metadata={"build_id": build_id, "kind": kind, "chunk": str(chunk), "object": key},
    )
