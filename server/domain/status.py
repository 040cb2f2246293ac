"""The build state machine, as data: the allowed moves and one pure function."""

from __future__ import annotations

import enum

from server.domain.errors import InvalidTransition


class BuildStatus(enum.StrEnum):
    """Stored as the PostgreSQL enum build_status; names match the seed schema."""

    PENDING = "PENDING"
    INITIALIZING = "INITIALIZING"
    RUNNING = "RUNNING"
    PAUSED = "PAUSED"
    AWAITING_DESIGN_REVIEW = "AWAITING_DESIGN_REVIEW"
    AWAITING_FEATURE_REVIEW = "AWAITING_FEATURE_REVIEW"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


S = BuildStatus
TERMINAL: frozenset[BuildStatus] = frozenset({S.COMPLETED, S.FAILED, S.CANCELLED})
REVIEW_GATES: frozenset[BuildStatus] = frozenset({S.AWAITING_DESIGN_REVIEW, S.AWAITING_FEATURE_REVIEW})

_ANY_TIME = frozenset({S.CANCELLED, S.FAILED})
ALLOWED: dict[BuildStatus, frozenset[BuildStatus]] = {
    S.PENDING: frozenset({S.INITIALIZING}) | _ANY_TIME,
    S.INITIALIZING: frozenset({S.RUNNING}) | _ANY_TIME,
    S.RUNNING: frozenset(
        {S.PAUSED, S.AWAITING_DESIGN_REVIEW, S.AWAITING_FEATURE_REVIEW, S.COMPLETED}
    )
    | _ANY_TIME,
    S.PAUSED: frozenset({S.RUNNING}) | _ANY_TIME,
    S.AWAITING_DESIGN_REVIEW: frozenset({S.RUNNING}) | _ANY_TIME,
    S.AWAITING_FEATURE_REVIEW: frozenset({S.RUNNING}) | _ANY_TIME,
    S.COMPLETED: frozenset(),
    S.FAILED: frozenset(),
    S.CANCELLED: frozenset(),
}


def transition(current: BuildStatus, requested: BuildStatus, *, by_review: bool = False) -> BuildStatus:
    """Return the new status, or raise InvalidTransition naming both statuses.

    A review gate is left for RUNNING only by a review (by_review=True): the
    agent cannot approve its own design.
    """
    if requested not in ALLOWED[current]:
        why = "the build has finished" if current in TERMINAL else ""
        raise InvalidTransition(current.value, requested.value, why)
    if current in REVIEW_GATES and requested is S.RUNNING and not by_review:
        raise InvalidTransition(
            current.value, requested.value, "a review gate is answered with ReviewBuild"
        )
    return requested


class ReviewDecision(enum.StrEnum):
    APPROVE = "APPROVE"
    REQUEST_CHANGES = "REQUEST_CHANGES"
    REJECT = "REJECT"


def review_outcome(current: BuildStatus, *, decision: ReviewDecision) -> BuildStatus:
    """The status a review decision moves a build in a review gate to."""
    if current not in REVIEW_GATES:
        raise InvalidTransition(
            current.value,
            (S.CANCELLED if decision is ReviewDecision.REJECT else S.RUNNING).value,
            "the build is not awaiting a review",
        )
    target = S.CANCELLED if decision is ReviewDecision.REJECT else S.RUNNING
    return transition(current, target, by_review=True)
