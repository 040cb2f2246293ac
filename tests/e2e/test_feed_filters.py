"""Filters on a build of many lines: tails of a level, since_time, level and
type filters of List and Stream return exactly the right lines (the server
answers them from per-level indexes; docs/streaming.md), and too many filter
values are refused."""

from __future__ import annotations

import grpc
import pytest
from buildplatform.v1 import build_event_pb2 as E
from buildplatform.v1 import build_log_pb2 as L
from google.protobuf import struct_pb2

from server.domain.limits import MAX_FILTER_VALUES
from tests.e2e.expect import invalid, race
from tests.e2e.streaming import (
    ERROR,
    INFO,
    TOOL,
    WARN,
    append,
    lines,
    new_build,
    read_stream,
    start_running,
)

LINES, BATCH = 6000, 1000


def level_of(seq: int) -> int:
    """ERROR is rare (every 997th line), WARN every 10th, TOOL never."""
    return ERROR if seq % 997 == 0 else WARN if seq % 10 == 0 else INFO


@pytest.fixture(scope="module")
def many(api):
    """A build of 6000 lines in 6 appends (each append shares one create_time)."""
    build = new_build(api)
    start_running(api, build.id)
    for first in range(1, LINES + 1, BATCH):
        append(api, build.id, [L.LogEntry(level=level_of(s), message=f"line {s}") for s in range(first, first + BATCH)])
    return build


def seqs(responses) -> list[int]:
    return [log.sequence for r in responses for log in r.logs]


def matching(*levels: int, after: int = 0) -> list[int]:
    return [s for s in range(after + 1, LINES + 1) if level_of(s) in levels]


@pytest.mark.parametrize(("tail", "levels"), [(3, [ERROR]), (25, [ERROR, WARN]), (100, [ERROR]), (4, [TOOL]), (7, [])])
def test_a_tail_of_some_levels_is_exactly_their_last_lines(api, many, tail, levels):
    got = read_stream(api, build_id=many.id, tail_lines=tail, levels=levels)
    wanted = matching(*(levels or [INFO, WARN, ERROR]))
    assert seqs(got) == wanted[-tail:]
    assert got[-1].caught_up and got[-1].cursor == LINES  # past the lines the filter skipped


def test_a_tail_after_a_cursor_counts_only_lines_after_it(api, many):
    got = read_stream(api, build_id=many.id, after_sequence=4000, tail_lines=5, levels=[ERROR])
    assert seqs(got) == matching(ERROR, after=4000)  # only 2 ERROR lines lie after 4000


@pytest.mark.parametrize("after", [0, 2500])
def test_a_stream_of_a_rare_level_catches_up_with_exactly_those_lines(api, many, after):
    got = read_stream(api, build_id=many.id, after_sequence=after, levels=[ERROR])
    assert seqs(got) == matching(ERROR, after=after)
    assert got[-1].caught_up and got[-1].cursor == LINES


def test_list_with_a_level_filter_pages_exactly_those_lines(api, many):
    seen, token = [], ""
    while True:
        page = api.logs.ListBuildLogs(L.ListBuildLogsRequest(build_id=many.id, levels=[ERROR, WARN], page_size=70, page_token=token))
        seen += [log.sequence for log in page.logs]
        assert all(log.level in (ERROR, WARN) for log in page.logs)
        token = page.next_page_token
        if not token:
            break
    assert seen == matching(ERROR, WARN)


def test_since_time_starts_at_the_first_line_created_then(api, many):
    """Each append shares one create_time, and create_time never decreases
    with the sequence: since the time of line 3001 (the first of the 4th
    append) is exactly lines 3001 and on."""
    line = api.logs.ListBuildLogs(L.ListBuildLogsRequest(build_id=many.id, after_sequence=3000, page_size=1)).logs[0]
    assert line.sequence == 3001
    got = read_stream(api, build_id=many.id, since_time=line.create_time)
    assert seqs(got) == list(range(3001, LINES + 1))
    just_after = type(line.create_time)(seconds=line.create_time.seconds, nanos=line.create_time.nanos + 1000)
    assert seqs(read_stream(api, build_id=many.id, since_time=just_after, levels=[ERROR])) == matching(ERROR, after=4000)
    combined = read_stream(api, build_id=many.id, since_time=line.create_time, tail_lines=2, levels=[ERROR])
    assert seqs(combined) == matching(ERROR, after=3000)[-2:]


def test_create_time_never_decreases_with_the_sequence_under_concurrent_appends(api, build):
    """Appends wait for the build's row lock in whatever order; the time each
    one stamps is taken under that lock, so it follows the sequence."""
    start_running(api, build.id)
    for _ in range(5):
        results = race(8, lambda i: append(api, build.id, lines(*[f"{i}.{n}" for n in range(20)])))
        assert all(not isinstance(result, grpc.RpcError) for _, result in results)
    logs = api.logs.ListBuildLogs(L.ListBuildLogsRequest(build_id=build.id, page_size=1000)).logs
    stamps = [log.create_time.ToNanoseconds() for log in logs]
    assert len(stamps) == 800 and stamps == sorted(stamps)


def event(type_: str, n: int) -> E.EventEntry:
    data = struct_pb2.Struct()
    data.update({"n": n})
    return E.EventEntry(type=type_, data=data)


def test_event_types_filter_tail_and_list(api, build):
    kinds = ["file_created", "command_run", "test_failed"]
    entries = [event(kinds[0] if n % 50 else kinds[2] if n % 300 == 0 else kinds[1], n) for n in range(1, 1501)]
    api.events.AppendBuildEvents(E.AppendBuildEventsRequest(build_id=build.id, entries=entries))
    failed = [n for n in range(1, 1501) if n % 300 == 0 and n % 50 == 0]
    ran = [n for n in range(1, 1501) if n % 50 == 0 and n % 300]
    got = list(api.events.StreamBuildEvents(E.StreamBuildEventsRequest(build_id=build.id, types=["test_failed"], tail_events=2)))
    assert [int(e.data["n"]) for r in got for e in r.events] == failed[-2:] and got[-1].cursor == 1500
    listed = api.events.ListBuildEvents(E.ListBuildEventsRequest(build_id=build.id, types=["command_run", "test_failed"])).events
    assert [int(e.data["n"]) for e in listed] == sorted(failed + ran)


def test_too_many_filter_values_are_invalid_argument_naming_the_field(api, many):
    too_many = MAX_FILTER_VALUES + 1
    invalid(api.logs.ListBuildLogs, L.ListBuildLogsRequest(build_id=many.id, levels=[ERROR] * too_many), "levels")
    invalid(lambda r: list(api.logs.StreamBuildLogs(r)), L.StreamBuildLogsRequest(build_id=many.id, levels=[WARN] * too_many), "levels")
    types = [f"type_{i}" for i in range(too_many)]
    invalid(api.events.ListBuildEvents, E.ListBuildEventsRequest(build_id=many.id, types=types), "types")
    invalid(lambda r: list(api.events.StreamBuildEvents(r)), E.StreamBuildEventsRequest(build_id=many.id, types=types), "types")
    # At the limit the request is served.
    assert api.logs.ListBuildLogs(L.ListBuildLogsRequest(build_id=many.id, levels=[ERROR] * MAX_FILTER_VALUES, page_size=1)).logs
