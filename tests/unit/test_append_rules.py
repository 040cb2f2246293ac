"""What a writer is told when an append to a build's logs or events is refused."""

from __future__ import annotations

from server.domain.feeds import may_be_retry, refusal
from server.domain.status import BuildStatus


def test_a_batch_at_an_offset_whose_lines_are_written_may_be_a_retry():
    assert may_be_retry(first_sequence=3, count=2, last=10)
    assert may_be_retry(first_sequence=9, count=2, last=10)


def test_a_batch_beyond_the_end_or_without_an_offset_is_no_retry():
    assert not may_be_retry(first_sequence=10, count=2, last=10)
    assert not may_be_retry(first_sequence=0, count=2, last=10)


def test_a_finished_build_takes_no_more_lines():
    error = refusal("log", "b1", BuildStatus.COMPLETED, 7, 0)
    assert error.reason == "BUILD_FINISHED"
    assert error.metadata == {"current_status": "COMPLETED", "last_sequence": "7"}


def test_an_offset_that_does_not_follow_names_the_expected_one():
    error = refusal("event", "b1", BuildStatus.RUNNING, 7, 3)
    assert error.reason == "SEQUENCE_MISMATCH"
    assert error.metadata == {"last_sequence": "7", "expected_first_sequence": "8"}
