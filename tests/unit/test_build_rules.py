"""The rules of a build, as the domain decides them: no database, no server."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from server.domain import builds as rules
from server.domain.builds import Ownership, Review, SpecSource
from server.domain.errors import FailedPrecondition, InvalidArgument, InvalidTransition, NotFound
from server.domain.limits import MAX_KEPT_REVIEWS
from server.domain.status import BuildStatus, ReviewDecision

S = BuildStatus
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_a_user_may_name_a_project_it_owns():
    rules.check_owner(Ownership("p1", "u1", "u1", True), field="build.project_id")


def test_a_missing_project_is_not_found_on_the_project_field():
    with pytest.raises(NotFound) as caught:
        rules.check_owner(Ownership("p1", "u1", None, True), field="build.project_id")
    assert (caught.value.resource, caught.value.field) == ("project", "build.project_id")


def test_a_missing_user_is_not_found_rather_than_a_stranger():
    with pytest.raises(NotFound) as caught:
        rules.check_owner(Ownership("p1", "u1", "u2", False), field="chat_session.project_id")
    assert (caught.value.resource, caught.value.field) == ("user", "chat_session.user_id")


def test_another_users_project_is_failed_precondition():
    with pytest.raises(FailedPrecondition) as caught:
        rules.check_owner(Ownership("p1", "u1", "u2", True), field="build.project_id")
    assert caught.value.reason == "PROJECT_OWNER_MISMATCH"


def test_a_build_needs_text_or_an_app_spec():
    rules.require_spec_text("spec", None)
    rules.require_spec_text("", "c" * 25)
    with pytest.raises(InvalidArgument):
        rules.require_spec_text("  ", None)


def test_a_build_from_an_app_spec_keeps_a_copy_of_its_text():
    source = SpecSource("s1", "p1", "the spec")
    assert rules.spec_text("", "p1", "s1", source) == "the spec"
    assert rules.spec_text("mine", "p1", "s1", source) == "mine"
    assert rules.spec_text("mine", "p1", None, None) == "mine"


def test_an_app_spec_of_another_project_or_none_is_refused():
    with pytest.raises(FailedPrecondition) as caught:
        rules.spec_text("", "p2", "s1", SpecSource("s1", "p1", "x"))
    assert caught.value.reason == "APP_SPEC_PROJECT_MISMATCH"
    with pytest.raises(NotFound):
        rules.spec_text("", "p1", "s1", None)


def test_app_spec_changes_only_while_pending_and_never_to_nothing():
    rules.check_update("b", S.PENDING, {"app_spec": "new"})
    rules.check_update("b", S.RUNNING, {"progress": {"step": 2}})
    with pytest.raises(FailedPrecondition) as caught:
        rules.check_update("b", S.RUNNING, {"app_spec": "new"})
    assert caught.value.reason == "BUILD_STARTED"
    with pytest.raises(InvalidArgument):
        rules.check_values({"app_spec": " "})


def test_the_first_move_out_of_pending_sets_start_time():
    change = rules.move(S.PENDING, False, S.INITIALIZING, reason="go", now=NOW)
    assert (change.status, change.start_time, change.finish_time, change.status_reason) == (
        S.INITIALIZING, NOW, None, "go"
    )
    assert rules.move(S.INITIALIZING, True, S.RUNNING, reason="", now=NOW).start_time is None


def test_a_terminal_move_sets_finish_time():
    change = rules.move(S.RUNNING, True, S.COMPLETED, reason="", now=NOW)
    assert change.finish_time == NOW
    cancelled = rules.move(S.PENDING, False, S.CANCELLED, reason="no", now=NOW)
    assert (cancelled.start_time, cancelled.finish_time) == (NOW, NOW)


def test_a_move_never_crosses_a_review_gate():
    with pytest.raises(InvalidTransition):
        rules.move(S.AWAITING_DESIGN_REVIEW, True, S.RUNNING, reason="", now=NOW)


def test_a_review_resumes_the_build_and_records_the_gate():
    earlier = {"decision": "REQUEST_CHANGES", "comment": "again", "reviewer": "bob", "gate": "AWAITING_DESIGN_REVIEW"}
    change = rules.review(S.AWAITING_FEATURE_REVIEW, True, [earlier], Review(ReviewDecision.APPROVE, "ok", "ann"), now=NOW)
    assert change.status is S.RUNNING
    assert change.status_reason == ""
    assert change.reviews == [earlier, {
        "decision": "APPROVE", "comment": "ok", "reviewer": "ann",
        "gate": "AWAITING_FEATURE_REVIEW", "create_time": NOW.isoformat(),
    }]


def test_the_review_history_keeps_the_newest_reviews():
    history = [{"comment": str(n)} for n in range(MAX_KEPT_REVIEWS)]
    change = rules.review(S.AWAITING_DESIGN_REVIEW, True, history, Review(ReviewDecision.APPROVE, "new", "ann"), now=NOW)
    assert change.reviews is not None and len(change.reviews) == MAX_KEPT_REVIEWS
    assert [r["comment"] for r in change.reviews] == [str(n) for n in range(1, MAX_KEPT_REVIEWS)] + ["new"]


def test_a_rejection_cancels_with_the_comment_as_reason():
    change = rules.review(S.AWAITING_DESIGN_REVIEW, True, [], Review(ReviewDecision.REJECT, "no", "ann"), now=NOW)
    assert (change.status, change.status_reason, change.finish_time) == (S.CANCELLED, "no", NOW)


def test_a_review_outside_a_gate_is_refused():
    with pytest.raises(InvalidTransition):
        rules.review(S.RUNNING, True, [], Review(ReviewDecision.APPROVE, "", "ann"), now=NOW)
