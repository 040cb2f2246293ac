"""The rules of an append to a build's logs or events, as pure functions.

The store appends in one statement that refuses by itself (the build is
finished, or first_sequence does not follow the last sequence), so that an
accepted append costs one round trip; when it refuses, it reads the facts
and `refusal` decides what the writer is told.
"""

from __future__ import annotations

from server.domain.errors import FailedPrecondition
from server.domain.status import TERMINAL, BuildStatus


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
