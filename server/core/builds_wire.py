"""Builds on the wire: BuildRow -> Build, and a request's Build -> the
column values to write (validated against server.domain.limits). Output-only
fields of a request's Build are ignored, as the protos document."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from buildplatform.v1 import build_pb2

from server.core.wire import UpdateFields, etag, optional_text
from server.domain.errors import InvalidArgument
from server.domain.limits import MAX_DOCUMENT_BYTES, MAX_PROGRESS_BYTES, MAX_URL
from server.domain.status import BuildStatus, ReviewDecision
from server.domain.validation import Checker
from server.store.rows import BuildRow
from server.wellknown import dict_to_struct, struct_to_dict, timestamp

STATUS_TO_PB = {status: build_pb2.BuildStatus.Value(f"BUILD_STATUS_{status.value}") for status in BuildStatus}
STATUS_FROM_PB: dict[int, BuildStatus] = {number: status for status, number in STATUS_TO_PB.items()}
DECISION_TO_PB = {d: build_pb2.ReviewDecision.Value(f"REVIEW_DECISION_{d.value}") for d in ReviewDecision}
DECISION_FROM_PB: dict[int, ReviewDecision] = {number: decision for decision, number in DECISION_TO_PB.items()}

UPDATE = UpdateFields.of(build_pb2.Build.DESCRIPTOR)
CREATE_FIELDS = ("user_id", "project_id", "app_spec_id", "app_spec", "sandbox_id", "progress", "output_url", "artifact_key")


def status_from_pb(field: str, value: int) -> BuildStatus:
    status = STATUS_FROM_PB.get(value)
    if status is None:
        raise InvalidArgument.one(field, "must be a BuildStatus other than BUILD_STATUS_UNSPECIFIED")
    return status


def statuses_from_pb(field: str, values: Iterable[int]) -> list[BuildStatus]:
    """A filter's distinct statuses, sorted; every bad value is a violation."""
    check = Checker()
    statuses = set()
    for index, value in enumerate(values):
        status = STATUS_FROM_PB.get(value)
        if status is None:
            check.add(f"{field}[{index}]", "must be a BuildStatus other than BUILD_STATUS_UNSPECIFIED")
        else:
            statuses.add(status)
    check.done()
    return sorted(statuses)


def review_to_pb(review: dict[str, Any]) -> build_pb2.BuildReview:
    return build_pb2.BuildReview(
        gate=STATUS_TO_PB[BuildStatus(review["gate"])],
        decision=DECISION_TO_PB[ReviewDecision(review["decision"])],
        comment=review["comment"],
        reviewer=review["reviewer"],
        create_time=timestamp(datetime.fromisoformat(review["create_time"])),
    )


def build_to_pb(row: BuildRow) -> build_pb2.Build:
    return build_pb2.Build(
        id=row.id,
        user_id=row.user_id,
        project_id=row.project_id,
        status=STATUS_TO_PB[row.status],
        app_spec=row.app_spec,
        app_spec_id=row.app_spec_id,
        sandbox_id=row.sandbox_id,
        progress=dict_to_struct(row.progress),
        output_url=row.output_url,
        artifact_key=row.artifact_key,
        create_time=timestamp(row.create_time),
        update_time=timestamp(row.update_time),
        start_time=timestamp(row.start_time),
        finish_time=timestamp(row.finish_time),
        status_reason=row.status_reason,
        reviews=[review_to_pb(review) for review in row.reviews],
        etag=etag(row.revision),
        last_log_sequence=row.last_log_seq,
        last_event_sequence=row.last_event_seq,
    )


def build_values(build: build_pb2.Build, paths: Iterable[str]) -> dict[str, Any]:
    check = Checker()
    values: dict[str, Any] = {}
    for path in paths:
        field = f"build.{path}"
        if path in ("user_id", "project_id"):
            values[path] = check.id(field, getattr(build, path))
        elif path == "app_spec_id":
            spec_id = optional_text(build, "app_spec_id")
            values[path] = check.id(field, spec_id, required=False) if spec_id else None
        elif path == "app_spec":
            values[path] = check.text(field, build.app_spec, max_bytes=MAX_DOCUMENT_BYTES)
        elif path in ("sandbox_id", "output_url", "artifact_key"):
            value = optional_text(build, path)
            values[path] = None if value is None else check.text(field, value, max_chars=MAX_URL)
        elif path == "progress":
            progress = struct_to_dict(build.progress) if build.HasField("progress") else None
            valid = check.json(field, progress, max_bytes=MAX_PROGRESS_BYTES, wire_bytes=build.progress.ByteSize())
            values[path] = progress if valid else None
    check.done()
    return values
