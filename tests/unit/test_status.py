"""The build state machine as a table, checked against the contract's text."""

from __future__ import annotations

import itertools

import pytest

from server.domain.errors import InvalidTransition
from server.domain.status import (
    REVIEW_GATES,
    TERMINAL,
    BuildStatus,
    ReviewDecision,
    review_outcome,
    transition,
)

S = BuildStatus
# Written out from build.proto, independently of server.domain.status.ALLOWED.
CONTRACT = {
    S.PENDING: {S.INITIALIZING, S.CANCELLED, S.FAILED},
    S.INITIALIZING: {S.RUNNING, S.CANCELLED, S.FAILED},
    S.RUNNING: {S.PAUSED, S.AWAITING_DESIGN_REVIEW, S.AWAITING_FEATURE_REVIEW, S.COMPLETED, S.CANCELLED, S.FAILED},
    S.PAUSED: {S.RUNNING, S.CANCELLED, S.FAILED},
    S.AWAITING_DESIGN_REVIEW: {S.CANCELLED, S.FAILED},
    S.AWAITING_FEATURE_REVIEW: {S.CANCELLED, S.FAILED},
    S.COMPLETED: set(),
    S.FAILED: set(),
    S.CANCELLED: set(),
}


@pytest.mark.parametrize(("current", "requested"), list(itertools.product(S, S)), ids=lambda s: s.value)
def test_transition_allows_exactly_the_contracts_moves(current, requested):
    if requested in CONTRACT[current]:
        assert transition(current, requested) is requested
    else:
        with pytest.raises(InvalidTransition) as caught:
            transition(current, requested)
        assert caught.value.metadata == {"current_status": current.value, "requested_status": requested.value}
        assert current.value in caught.value.message and requested.value in caught.value.message


def test_terminal_statuses_have_no_way_out():
    assert {S.COMPLETED, S.FAILED, S.CANCELLED} == TERMINAL
    for status in TERMINAL:
        assert not CONTRACT[status]


def test_a_refused_move_from_a_terminal_status_says_the_build_has_finished():
    with pytest.raises(InvalidTransition, match="has finished"):
        transition(S.COMPLETED, S.RUNNING)


@pytest.mark.parametrize("gate", sorted(REVIEW_GATES))
def test_only_a_review_opens_a_gate(gate):
    with pytest.raises(InvalidTransition, match="ReviewBuild"):
        transition(gate, S.RUNNING)
    assert transition(gate, S.RUNNING, by_review=True) is S.RUNNING


@pytest.mark.parametrize("gate", sorted(REVIEW_GATES))
@pytest.mark.parametrize(
    ("decision", "outcome"),
    [(ReviewDecision.APPROVE, S.RUNNING), (ReviewDecision.REQUEST_CHANGES, S.RUNNING), (ReviewDecision.REJECT, S.CANCELLED)],
)
def test_review_outcome_of_each_decision(gate, decision, outcome):
    assert review_outcome(gate, decision=decision) is outcome


@pytest.mark.parametrize("current", [s for s in S if s not in REVIEW_GATES])
def test_review_outside_a_gate_is_refused_naming_the_status(current):
    with pytest.raises(InvalidTransition) as caught:
        review_outcome(current, decision=ReviewDecision.APPROVE)
    assert caught.value.metadata["current_status"] == current.value
    assert "not awaiting a review" in caught.value.message
