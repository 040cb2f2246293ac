"""Log steps (LogStep on LogEntry and BuildLog): stored with their line and
sent back unchanged by every read, with bad steps refused by field."""

from __future__ import annotations

import grpc
import pytest
from buildplatform.v1 import build_log_pb2 as L

from tests.e2e.streaming import ERROR, INFO, append, read_stream, violations

START, END = L.LOG_STEP_ACTION_START, L.LOG_STEP_ACTION_END


def step_line(step_id: str, action: int, name: str = "", message: str = "", level: int = INFO) -> L.LogEntry:
    return L.LogEntry(level=level, message=message, step=L.LogStep(id=step_id, name=name, action=action))


def test_steps_round_trip_through_list_and_stream_and_a_retry(api, build):
    entries = [
        step_line("build", START, "Build the image", "building"),
        L.LogEntry(level=INFO, message="inside"),
        step_line("test", START, "Run the tests"),  # an empty message: the step alone is enough
        L.LogEntry(level=ERROR, message="1 failed"),
        step_line("test", END, "ignored on END"),
        step_line("build", END),
        L.LogEntry(level=INFO, message="after"),
    ]
    # A large batch goes through COPY, a small one through one statement: both store the step.
    append(api, build.id, entries, first=1)
    append(api, build.id, entries * 40, first=8)
    listed = api.logs.ListBuildLogs(L.ListBuildLogsRequest(build_id=build.id, page_size=7)).logs
    streamed = [log for response in read_stream(api, build_id=build.id, after_sequence=7) for log in response.logs]
    expected = [
        ("build", "Build the image", START),
        None,
        ("test", "Run the tests", START),
        None,
        ("test", "", END),  # the name is kept on START only
        ("build", "", END),
        None,
    ]
    for logs in (listed, streamed[:7]):
        got = [(log.step.id, log.step.name, log.step.action) if log.HasField("step") else None for log in logs]
        assert got == expected
    assert len(streamed) == 280
    # A retry of the same batch (steps included) is recognised as written.
    assert append(api, build.id, entries, first=1).already_written


def test_a_retry_whose_steps_differ_is_not_taken_for_the_same_batch(api, build):
    append(api, build.id, [step_line("a", START, "A")], first=1)
    with pytest.raises(grpc.RpcError) as caught:
        append(api, build.id, [step_line("b", START, "A")], first=1)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION


@pytest.mark.parametrize(
    ("step", "field", "says"),
    [
        (L.LogStep(id="", action=START), "entries[0].step.id", "1 to 64 characters"),
        (L.LogStep(id="has space", action=START), "entries[0].step.id", "1 to 64 characters"),
        (L.LogStep(id="x" * 65, action=START), "entries[0].step.id", "1 to 64 characters"),
        (L.LogStep(id="ok", action=L.LOG_STEP_ACTION_UNSPECIFIED), "entries[0].step.action", "LOG_STEP_ACTION_START"),
        (L.LogStep(id="ok", name="n" * 257, action=START), "entries[0].step.name", "at most 256 bytes"),
    ],
)
def test_a_bad_step_is_refused_naming_its_field_and_writes_nothing(api, build, step, field, says):
    with pytest.raises(grpc.RpcError) as caught:
        append(api, build.id, [L.LogEntry(level=INFO, message="m", step=step)])
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert says in violations(caught.value)[field]
    assert list(api.logs.ListBuildLogs(L.ListBuildLogsRequest(build_id=build.id)).logs) == []
