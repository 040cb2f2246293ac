"""BuildLogService: appends, listing, streams (tail -f), and bad input."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from buildplatform.v1 import build_log_pb2 as L
from buildplatform.v1 import build_pb2
from google.protobuf import struct_pb2, timestamp_pb2

from tests.e2e.streaming import (
    ERROR,
    INFO,
    TOOL,
    WARN,
    append,
    error_info,
    finish,
    lines,
    messages_of,
    read_stream,
    start_running,
    violations,
)


def test_append_assigns_consecutive_sequences_from_one(api, build):
    first = append(api, build.id, lines("a", "b", "c"))
    second = append(api, build.id, lines("d"))
    assert (first.first_sequence, first.last_sequence, first.already_written) == (1, 3, False)
    assert (second.first_sequence, second.last_sequence) == (4, 4)
    logs = api.logs.ListBuildLogs(L.ListBuildLogsRequest(build_id=build.id)).logs
    assert [(log.sequence, log.message) for log in logs] == [(1, "a"), (2, "b"), (3, "c"), (4, "d")]
    assert all(log.build_id == build.id and log.id > 0 for log in logs)
    got = api.builds.GetBuild(build_pb2.GetBuildRequest(id=build.id)).build
    assert got.last_log_sequence == 4


def test_metadata_and_levels_round_trip(api, build):
    metadata = struct_pb2.Struct()
    metadata.update({"tool": "npm", "exit_code": 0, "args": ["install", "--ci"], "nested": {"ok": True}})
    append(api, build.id, [L.LogEntry(level=TOOL, message="npm install", metadata=metadata),
                           L.LogEntry(level=ERROR, message="boom")])
    logs = api.logs.ListBuildLogs(L.ListBuildLogsRequest(build_id=build.id)).logs
    assert logs[0].level == TOOL and logs[0].metadata == metadata
    assert logs[1].level == ERROR and not logs[1].HasField("metadata")


def test_retry_of_a_written_batch_is_acknowledged_and_not_written_twice(api, build):
    batch = lines("compile", "link")
    first = append(api, build.id, batch, first=1)
    retry = append(api, build.id, batch, first=1)
    assert (retry.first_sequence, retry.last_sequence, retry.already_written) == (1, 2, True)
    assert first.already_written is False
    logs = api.logs.ListBuildLogs(L.ListBuildLogsRequest(build_id=build.id)).logs
    assert [log.message for log in logs] == ["compile", "link"]


def test_wrong_first_sequence_is_failed_precondition_saying_where_the_log_stands(api, build):
    append(api, build.id, lines("one", "two"))
    with pytest.raises(grpc.RpcError) as gap:
        append(api, build.id, lines("four"), first=4)
    assert gap.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    info = error_info(gap.value)
    assert info.reason == "SEQUENCE_MISMATCH" and info.metadata["last_sequence"] == "2"
    with pytest.raises(grpc.RpcError) as clash:  # same offset, different lines: not a retry
        append(api, build.id, lines("other"), first=2)
    assert clash.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert append(api, build.id, lines("three"), first=3).first_sequence == 3


def test_list_pages_oldest_first_from_a_sequence(api, build):
    append(api, build.id, lines(*[f"line {i}" for i in range(1, 26)]))
    seen, token = [], ""
    while True:
        page = api.logs.ListBuildLogs(L.ListBuildLogsRequest(build_id=build.id, page_size=10, page_token=token, after_sequence=5))
        seen += [log.sequence for log in page.logs]
        token = page.next_page_token
        if not token:
            break
    assert seen == list(range(6, 26))


def test_list_filters_by_level(api, build):
    append(api, build.id, lines("i1") + lines("w1", level=WARN) + lines("i2") + lines("e1", level=ERROR))
    logs = api.logs.ListBuildLogs(L.ListBuildLogsRequest(build_id=build.id, levels=[WARN, ERROR])).logs
    assert [log.message for log in logs] == ["w1", "e1"]


def test_stream_without_follow_sends_the_backlog_then_caught_up_and_ends(api, build):
    append(api, build.id, lines("a", "b", "c"))
    responses = read_stream(api, build_id=build.id)
    assert messages_of(responses) == ["a", "b", "c"]
    assert responses[-1].caught_up and responses[-1].cursor == 3
    assert sum(r.caught_up for r in responses) == 1


def test_stream_of_an_empty_log_is_one_caught_up_marker(api, build):
    responses = read_stream(api, build_id=build.id)
    assert len(responses) == 1 and responses[0].caught_up and not responses[0].logs


def test_resume_after_a_cursor_sends_only_later_lines(api, build):
    append(api, build.id, lines(*"abcdef"))
    assert messages_of(read_stream(api, build_id=build.id, after_sequence=4)) == ["e", "f"]


def test_tail_sends_only_the_last_n_lines(api, build):
    append(api, build.id, lines(*[str(i) for i in range(1, 11)]))
    assert messages_of(read_stream(api, build_id=build.id, tail_lines=3)) == ["8", "9", "10"]


def test_tail_counts_only_lines_matching_the_level_filter(api, build):
    append(api, build.id, lines("e1", level=ERROR) + lines("i1", "i2") + lines("e2", level=ERROR) + lines("i3"))
    got = read_stream(api, build_id=build.id, tail_lines=1, levels=[ERROR])
    assert messages_of(got) == ["e2"]
    assert got[-1].cursor == 5  # the cursor moved past the filtered lines


def test_since_time_skips_older_lines(api, build):
    append(api, build.id, lines("old"))
    time.sleep(0.05)
    since = datetime.now(UTC)
    append(api, build.id, lines("new"))
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(since)
    assert messages_of(read_stream(api, build_id=build.id, since_time=stamp)) == ["new"]
    stamp.FromDatetime(since + timedelta(hours=1))
    assert messages_of(read_stream(api, build_id=build.id, since_time=stamp)) == []


def test_follow_delivers_live_lines_and_ends_after_the_terminal_status(api, build):
    start_running(api, build.id)
    append(api, build.id, lines("before"))
    received: list = []
    stream = api.logs.StreamBuildLogs(L.StreamBuildLogsRequest(build_id=build.id, follow=True), timeout=30)

    def consume():
        received.extend(stream)

    reader = threading.Thread(target=consume)
    reader.start()
    append(api, build.id, lines("live 1", "live 2"))
    append(api, build.id, lines("last"))
    finish(api, build.id, build_pb2.BUILD_STATUS_FAILED)
    reader.join(20)
    assert not reader.is_alive(), "follow did not end after the build failed"
    assert messages_of(received) == ["before", "live 1", "live 2", "last"]
    assert stream.code() == grpc.StatusCode.OK
    assert sum(r.caught_up for r in received) == 1


def test_follow_of_a_finished_build_sends_the_backlog_and_ends(api, build):
    append(api, build.id, lines("x", "y"))
    finish(api, build.id)
    responses = read_stream(api, build_id=build.id, follow=True)
    assert messages_of(responses) == ["x", "y"] and responses[-1].caught_up


def test_follow_of_a_pending_build_stays_open_with_heartbeats(api, build):
    stream = api.logs.StreamBuildLogs(L.StreamBuildLogsRequest(build_id=build.id, follow=True), timeout=30)
    first = next(stream)
    assert first.caught_up and not first.logs
    heartbeat = next(stream)  # the test server sends one after 1 s of silence
    assert not heartbeat.logs and not heartbeat.caught_up and heartbeat.cursor == 0
    append(api, build.id, lines("started"))
    live = next(stream)
    while not live.logs:  # skip heartbeats
        live = next(stream)
    assert [log.message for log in live.logs] == ["started"]
    stream.cancel()


def test_level_filter_on_a_live_stream(api, build):
    start_running(api, build.id)
    stream = api.logs.StreamBuildLogs(L.StreamBuildLogsRequest(build_id=build.id, follow=True, levels=[WARN]), timeout=30)
    append(api, build.id, lines("quiet") + lines("loud", level=WARN))
    finish(api, build.id)
    assert messages_of(list(stream)) == ["loud"]


def test_stream_of_a_missing_build_is_not_found(api):
    with pytest.raises(grpc.RpcError) as error:
        read_stream(api, build_id="c" + "0" * 24, follow=True)
    assert error.value.code() == grpc.StatusCode.NOT_FOUND


def test_append_to_a_missing_build_is_not_found(api):
    with pytest.raises(grpc.RpcError) as error:
        append(api, "c" + "0" * 24, lines("x"))
    assert error.value.code() == grpc.StatusCode.NOT_FOUND


def test_append_to_a_finished_build_is_failed_precondition_and_writes_nothing(api, build):
    append(api, build.id, lines("done"))
    finish(api, build.id, build_pb2.BUILD_STATUS_CANCELLED)
    with pytest.raises(grpc.RpcError) as error:
        append(api, build.id, lines("too late"))
    assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "CANCELLED" in error.value.details()
    assert error_info(error.value).reason == "BUILD_FINISHED"
    assert len(api.logs.ListBuildLogs(L.ListBuildLogsRequest(build_id=build.id)).logs) == 1


@pytest.mark.parametrize(
    ("entries", "field", "words"),
    [
        ([], "entries", "at least one"),
        ([L.LogEntry(level=INFO, message="ok"), L.LogEntry(level=INFO, message="nul\x00byte")], "entries[1].message", "NUL"),
        ([L.LogEntry(level=L.LOG_LEVEL_UNSPECIFIED, message="x")], "entries[0].level", "LogLevel"),
        ([L.LogEntry(level=INFO, message="x" * 65537)], "entries[0].message", "65536 bytes"),
        ([L.LogEntry(level=INFO, message="é" * 40000)], "entries[0].message", "65536 bytes"),
        ([L.LogEntry(level=INFO, message="")], "entries[0].message", "required"),
        ([L.LogEntry(level=INFO, message="x")] * 5001, "entries", "at most 5000"),
    ],
    ids=["empty-batch", "nul", "unknown-level", "too-long", "too-long-utf8", "empty-message", "batch-too-big"],
)
def test_bad_entries_are_invalid_argument_naming_the_field_and_write_nothing(api, build, entries, field, words):
    with pytest.raises(grpc.RpcError) as error:
        append(api, build.id, entries)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    found = violations(error.value)
    assert field in found and words in found[field], found
    assert api.builds.GetBuild(build_pb2.GetBuildRequest(id=build.id)).build.last_log_sequence == 0


@pytest.mark.parametrize(
    ("metadata", "field"),
    [
        ({"k": "a\x00b"}, "entries[0].metadata.k"),
        ({"bad\x00key": 1}, "entries[0].metadata"),
        ({"n": float("nan")}, "entries[0].metadata.n"),
        ({"deep": {"list": [1, float("inf")]}}, "entries[0].metadata.deep.list[1]"),
        ({"big": "x" * 20000}, "entries[0].metadata"),
    ],
    ids=["nul-value", "nul-key", "nan", "infinity", "too-big"],
)
def test_metadata_postgres_would_refuse_is_invalid_argument(api, build, metadata, field):
    struct = struct_pb2.Struct()
    struct.update(metadata)
    with pytest.raises(grpc.RpcError) as error:
        append(api, build.id, [L.LogEntry(level=INFO, message="m", metadata=struct)])
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert any(name.startswith(field) for name in violations(error.value)), violations(error.value)
