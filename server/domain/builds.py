"""A build's rules, as pure functions beside the status table: which
project a build (or chat session) may name, the app-spec copy on create,
what may change in which status, and what a status move writes.

The store reads the facts these functions need under the right lock and
writes what they return; the core calls them. Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from server.domain.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from server.domain.limits import MAX_KEPT_REVIEWS
from server.domain.secrets import (
    MAX_SECRET_BYTES_PER_BUILD,
    MAX_SECRETS_PER_BUILD,
    MAX_SECRETS_PER_REQUEST,
    problem,
)
from server.domain.status import TERMINAL, BuildStatus, ReviewDecision, review_outcome, transition
from server.domain.validation import Checker


@dataclass(frozen=True, slots=True)
class Ownership:
    """What the database says about a project a user names: its owner (None
    when the project does not exist) and whether the user exists."""

    project_id: str
    user_id: str
    owner_id: str | None
    user_exists: bool


def check_owner(facts: Ownership, *, field: str) -> None:
    """NotFound unless the project (and the user) exist; FailedPrecondition
    unless the user owns the project. `field` names the project_id field."""
    if facts.owner_id is None:
        raise NotFound("project", facts.project_id, field=field)
    if facts.owner_id != facts.user_id:
        # A user that does not exist is NOT_FOUND, as the contract says,
        # not a project owned by "another" user.
        if not facts.user_exists:
            raise NotFound("user", facts.user_id, field=field.rsplit(".", 1)[0] + ".user_id")
        raise FailedPrecondition(
            f"project {facts.project_id!r} belongs to another user than {facts.user_id!r}",
            reason="PROJECT_OWNER_MISMATCH",
            metadata={"project_id": facts.project_id, "user_id": facts.user_id},
        )


@dataclass(frozen=True, slots=True)
class SpecSource:
    """The app spec a new build names: its project and its text."""

    id: str
    project_id: str
    content: str


def require_spec_text(app_spec: str, app_spec_id: str | None) -> None:
    """A build is built from some text: its own, or its app spec's."""
    if not app_spec.strip() and not app_spec_id:
        raise InvalidArgument.one("build.app_spec", "is required unless build.app_spec_id names an app spec")


def spec_text(app_spec: str, project_id: str, app_spec_id: str | None, source: SpecSource | None) -> str:
    """The app_spec text a new build keeps: the request's, or a copy of the
    named app spec's (so deleting that version never changes what a past
    build was built from). The app spec must exist and be of the build's project."""
    if not app_spec_id:
        return app_spec
    if source is None:
        raise NotFound("app spec", app_spec_id, field="build.app_spec_id")
    if source.project_id != project_id:
        raise FailedPrecondition(
            f"app spec {source.id!r} belongs to another project than {project_id!r}",
            reason="APP_SPEC_PROJECT_MISMATCH",
            metadata={"app_spec_id": source.id, "project_id": project_id},
        )
    return app_spec or source.content


# Fields whose change depends on the build's status (check_update must see
# the row, locked): an update naming none of them needs no read first.
STATUS_DEPENDENT = frozenset({"app_spec"})


def check_values(values: dict[str, Any]) -> None:
    """An app_spec is never updated to nothing (checked before any read)."""
    if "app_spec" in values and not values["app_spec"].strip():
        raise InvalidArgument.one("build.app_spec", "must not be empty")


# What a build agent may update: the build's runtime fields.
RUNTIME_FIELDS = frozenset({"sandbox_id", "progress", "output_url", "artifact_key"})


def check_updater(kind: str, values: dict[str, Any]) -> None:
    """A build agent updates only the runtime fields; the app_spec is the user's."""
    if kind == "agent":
        other = sorted(set(values) - RUNTIME_FIELDS)
        if other:
            raise PermissionDenied(
                f"a build agent may update only {', '.join(sorted(RUNTIME_FIELDS))}, not {', '.join(other)}",
                permission=f"build.{other[0]}",
            )


def check_agent_token(build_id: str, status: BuildStatus) -> None:
    """An agent token is minted only for a build that has not finished."""
    if status in TERMINAL:
        raise FailedPrecondition(
            f"build {build_id!r} is {status}: it has finished and needs no agent; mint tokens for running builds",
            reason="BUILD_FINISHED",
            metadata={"current_status": str(status)},
        )


def check_secrets(build_id: str, status: BuildStatus, count: int, size: int) -> None:
    """Secrets are registered only for a build that can still append, and a
    build holds at most MAX_SECRETS_PER_BUILD of them, of at most
    MAX_SECRET_BYTES_PER_BUILD together."""
    if status in TERMINAL:
        raise FailedPrecondition(
            f"build {build_id!r} is {status}: it has finished and appends nothing more to mask",
            reason="BUILD_FINISHED",
            metadata={"current_status": str(status)},
        )
    if count > MAX_SECRETS_PER_BUILD or size > MAX_SECRET_BYTES_PER_BUILD:
        raise FailedPrecondition(
            f"build {build_id!r} would hold {count} secret values of {size} bytes, at most "
            f"{MAX_SECRETS_PER_BUILD} values and {MAX_SECRET_BYTES_PER_BUILD} bytes: register fewer "
            "(each value's lines are masked on their own already)",
            reason="TOO_MANY_SECRETS",
            metadata={"secret_count": str(count), "max_secret_count": str(MAX_SECRETS_PER_BUILD),
                      "secret_bytes": str(size), "max_secret_bytes": str(MAX_SECRET_BYTES_PER_BUILD)},
        )


def check_update(build_id: str, status: BuildStatus, values: dict[str, Any]) -> None:
    """The runtime fields change in any status; app_spec only while PENDING
    (the build has not read it yet)."""
    if "app_spec" in values and status is not BuildStatus.PENDING:
        raise FailedPrecondition(
            f"the app_spec of build {build_id!r} cannot change: it is {status}, "
            "and app_spec can only change while the build is PENDING",
            reason="BUILD_STARTED",
            metadata={"current_status": str(status)},
        )


@dataclass(frozen=True, slots=True)
class Review:
    decision: ReviewDecision
    comment: str
    reviewer: str


@dataclass(frozen=True, slots=True)
class StatusChange:
    """What a status move writes: the new status and reason, update_time,
    start_time (the first move out of PENDING), finish_time (a terminal
    status), and, after a review, the review history to keep."""

    status: BuildStatus
    status_reason: str
    update_time: datetime
    start_time: datetime | None = None
    finish_time: datetime | None = None
    reviews: list[dict[str, Any]] | None = None


def _change(current: BuildStatus, started: bool, target: BuildStatus, reason: str, now: datetime) -> StatusChange:
    return StatusChange(
        status=target,
        status_reason=reason,
        update_time=now,
        start_time=now if not started and target is not BuildStatus.PENDING else None,
        finish_time=now if target in TERMINAL else None,
    )


def move(current: BuildStatus, started: bool, target: BuildStatus, *, reason: str, now: datetime) -> StatusChange:
    """A move asked for by TransitionBuild or CancelBuild (never through a
    review gate); InvalidTransition when the status table refuses it.
    `started`: whether the build already has a start_time."""
    return _change(current, started, transition(current, target), reason, now)


def review(
    current: BuildStatus, started: bool, history: Sequence[dict[str, Any]], answer: Review, *, now: datetime
) -> StatusChange:
    """A review of the gate the build waits in: APPROVE and REQUEST_CHANGES
    resume it, REJECT cancels it with the comment as reason; the review is
    recorded with the gate it answered, and the history keeps the newest
    MAX_KEPT_REVIEWS (a build sent back again and again must stay small
    enough for every response that carries it)."""
    target = review_outcome(current, decision=answer.decision)
    reason = answer.comment if answer.decision is ReviewDecision.REJECT else ""
    entry = {
        "decision": answer.decision.value,
        "comment": answer.comment,
        "reviewer": answer.reviewer,
        "gate": current.value,
        "create_time": now.isoformat(),
    }
    return replace(_change(current, started, target, reason, now), reviews=[*history, entry][-MAX_KEPT_REVIEWS:])


def secret_values(field: str, values: Sequence[str], *, required: bool) -> list[str]:
    """The secret values of a request, each checked; a violation names the
    value's field (secrets[2]) and never quotes the value."""
    check = Checker()
    if required and not values:
        check.add(field, "must hold at least one value")
    elif len(values) > MAX_SECRETS_PER_REQUEST:
        check.add(field, f"must hold at most {MAX_SECRETS_PER_REQUEST} values, got {len(values)}")
    else:
        for index, value in enumerate(values):
            why = problem(value)
            if why is not None:
                check.add(f"{field}[{index}]", why)
        size = sum(len(value.encode()) for value in values)
        if size > MAX_SECRET_BYTES_PER_BUILD:
            check.add(field, f"must hold at most {MAX_SECRET_BYTES_PER_BUILD} bytes of UTF-8 together, got {size}")
    check.done()
    return list(values)
