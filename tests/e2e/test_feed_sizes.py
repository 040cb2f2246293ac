"""Lines at the size limits: every List page and stream message stays within
the response budget (RESPONSE_BYTES of items), so a client with gRPC's
default 4 MiB receive limit reads any log, from any cursor, live or behind
the ring; pages hold fewer lines when lines are big, and cursors and page
tokens stay exact."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import grpc
import psycopg
import pytest
from buildplatform.v1 import build_event_pb2 as E
from buildplatform.v1 import build_log_pb2 as L
from google.protobuf import struct_pb2

from server import migrate
from server.domain.limits import RESPONSE_BYTES
from tests.e2e.streaming import (
    INFO,
    append,
    finish,
    items_bytes,
    lines,
    long_lines,
    new_build,
    read_stream,
    start_running,
)
from tests.e2e.test_server_process import set_connections
from tests.support import create_database, drop_database, running_server, stubs

BATCH, BATCHES = 50, 3  # 150 lines of about 80 KiB: 12 MB, about a dozen budgets
TOTAL = BATCH * BATCHES
# Small rings: 3 such lines per build, 5 for the whole process.
SMALL_RINGS = {"FEED_RING_BYTES": str(3 * 82_000), "FEED_TOTAL_BYTES": str(5 * 82_000)}


def append_long(api, build_id: str, tag: str = "line") -> None:
    for batch in range(BATCHES):
        done = append(api, build_id, long_lines(f"{tag}{batch}", BATCH), first=batch * BATCH + 1)
        assert done.last_sequence == (batch + 1) * BATCH


def line_of(log: L.BuildLog) -> tuple[int, str]:
    """(sequence, which appended line it is), checked against the metadata."""
    tag, index, _ = log.message.split(" ", 2)
    assert int(log.metadata["index"]) == int(index) and len(log.metadata["blob"]) == 16_000
    return log.sequence, f"{tag} {index}"


def expected(first: int = 1, tag: str = "line") -> list[tuple[int, str]]:
    return [(seq, f"{tag}{(seq - 1) // BATCH} {(seq - 1) % BATCH}") for seq in range(first, TOTAL + 1)]


def within_budget(responses: list, field: str, *, full: bool = True) -> None:
    """Every response's items fit the budget; with `full` (a backlog, where
    everything is available at once), every response but the last is full
    too: the next line would not have fitted."""
    sizes = [items_bytes(getattr(r, field)) for r in responses]
    assert max(sizes) <= RESPONSE_BYTES, sizes
    line = max(items_bytes([item]) for r in responses for item in getattr(r, field))
    if full:
        assert all(size > RESPONSE_BYTES - 2 * line for size in sizes[:-1]), sizes


def list_all(api, **request) -> list[L.ListBuildLogsResponse]:
    pages, token = [], ""
    while True:
        page = api.logs.ListBuildLogs(L.ListBuildLogsRequest(page_token=token, **request), timeout=30)
        pages.append(page)
        token = page.next_page_token
        if not token:
            return pages


@pytest.fixture
def long_build(api, build):
    start_running(api, build.id)
    append_long(api, build.id)
    return build


@pytest.mark.parametrize("after", [0, 70])
def test_list_of_long_lines_pages_within_the_budget_from_any_sequence(api, long_build, after):
    pages = list_all(api, build_id=long_build.id, after_sequence=after)  # the default page_size, 500
    assert [line_of(log) for page in pages for log in page.logs] == expected(after + 1)
    within_budget(pages, "logs")
    assert len(pages) > 5 and all(len(page.logs) < 20 for page in pages)


def test_list_with_a_small_page_size_still_pages_exactly(api, long_build):
    pages = list_all(api, build_id=long_build.id, page_size=7, after_sequence=3)
    assert [line_of(log) for page in pages for log in page.logs] == expected(4)
    assert all(len(page.logs) == 7 for page in pages[:-1])


@pytest.mark.parametrize("after", [0, 70])
def test_stream_of_long_lines_from_any_cursor_stays_within_the_budget(api, long_build, after):
    responses = read_stream(api, build_id=long_build.id, after_sequence=after)
    assert [line_of(log) for r in responses for log in r.logs] == expected(after + 1)
    within_budget(responses, "logs")
    assert responses[-1].caught_up and responses[-1].cursor == TOTAL
    cursors = [r.cursor for r in responses]
    assert cursors == [r.logs[-1].sequence for r in responses]  # every message names its last line


def _follow(stub, build_id: str, got: list, *, after: int = 0) -> tuple[threading.Thread, object]:
    stream = stub.StreamBuildLogs(L.StreamBuildLogsRequest(build_id=build_id, after_sequence=after, follow=True), timeout=120)
    assert next(stream).caught_up

    def read() -> None:
        got.extend(stream)

    reader = threading.Thread(target=read)
    return reader, stream


def test_live_followers_of_long_lines_get_each_line_once_within_the_budget(api, build):
    start_running(api, build.id)
    got: list[L.StreamBuildLogsResponse] = []
    reader, _ = _follow(api.logs, build.id, got)
    reader.start()
    append_long(api, build.id)
    finish(api, build.id)
    reader.join(60)
    assert not reader.is_alive()
    assert [line_of(log) for r in got for log in r.logs] == expected()
    within_budget([r for r in got if r.logs], "logs", full=False)


@pytest.fixture
def small_ring_api(database_url) -> Iterator:
    with running_server(database_url, **SMALL_RINGS) as proc, proc.channel() as channel:
        yield stubs(channel)


def test_followers_that_fell_behind_a_small_ring_read_the_database(small_ring_api, make_build):
    """Two builds followed on a server whose rings hold 3 such lines (5 in
    all); the followers stop reading while 150 lines are appended to each,
    then read: what the rings evicted comes from the database, every line
    once, in order, each message within the budget."""
    api = small_ring_api
    builds = [make_build(), make_build()]
    streams = []
    for build in builds:
        start_running(api, build.id)
        stream = api.logs.StreamBuildLogs(L.StreamBuildLogsRequest(build_id=build.id, follow=True), timeout=120)
        assert next(stream).caught_up  # ...and then it does not read for a while
        streams.append(stream)
    for build in builds:
        append_long(api, build.id)
        finish(api, build.id)
    for stream in streams:
        got = list(stream)
        assert [line_of(log) for r in got for log in r.logs] == expected()
        within_budget([r for r in got if r.logs], "logs", full=False)


def retrying(call, *args, **kwargs):
    """A client's retry of UNAVAILABLE (the server's pool may still hand out
    connections the database ended, once each)."""
    for _ in range(30):
        try:
            return call(*args, **kwargs)
        except grpc.RpcError as error:
            assert error.code() == grpc.StatusCode.UNAVAILABLE, error.details()
            time.sleep(0.2)
    raise AssertionError("still UNAVAILABLE after 30 tries")


@pytest.fixture
def own_database(postgres) -> Iterator[str]:
    url = create_database(postgres, prefix="bp_feed_down")
    migrate.upgrade(url)
    yield url
    drop_database(postgres, url)


def test_a_stream_whose_database_read_fails_ends_unavailable_naming_its_resume_cursor(postgres, own_database):
    """The database refuses connections and ends the server's ones while a
    follower waits: its stream ends with UNAVAILABLE and the cursor to
    resume from; resuming there once the database is back loses nothing."""
    with running_server(own_database) as proc, proc.channel() as channel:
        api = stubs(channel)
        build = new_build(api)
        start_running(api, build.id)
        append(api, build.id, long_lines("before", 20))
        stream = api.logs.StreamBuildLogs(L.StreamBuildLogsRequest(build_id=build.id, follow=True), timeout=120)
        got = []
        for response in stream:
            got.extend(response.logs)
            if response.caught_up:
                break
        cursor = got[-1].sequence
        set_connections(postgres, own_database, allowed=False)
        try:
            with pytest.raises(grpc.RpcError) as ended:
                for response in stream:
                    got.extend(response.logs)
        finally:
            set_connections(postgres, own_database, allowed=True)
        assert ended.value.code() == grpc.StatusCode.UNAVAILABLE, ended.value.details()
        assert f"resume with after_sequence={cursor}" in ended.value.details()
        retrying(append, api, build.id, long_lines("after", 5), first=21)
        retrying(finish, api, build.id)
        rest = retrying(read_stream, api, build_id=build.id, after_sequence=cursor, follow=True)
        got.extend(log for response in rest for log in response.logs)
        assert [log.sequence for log in got] == list(range(1, 26))
        assert [log.message.split(" ")[0] for log in got] == ["before"] * 20 + ["after"] * 5


def test_the_stored_wire_size_bounds_each_line_in_a_response(api, build, database_url):
    """The size an append stores (what reads cut on) is never below the
    line's real size in a response, also for metadata whose protobuf Struct
    is far bigger than its JSON (numbers take 9 to 11 bytes there)."""
    numbers = struct_pb2.Struct()
    numbers.update({"numbers": [1] * 1400})  # under 16 KiB as JSON, about 15 KiB as a Struct
    entries = [*long_lines("big", 2), L.LogEntry(level=INFO, message="n", metadata=numbers), *lines("short")]
    append(api, build.id, entries)
    logs = api.logs.ListBuildLogs(L.ListBuildLogsRequest(build_id=build.id)).logs
    with psycopg.connect(database_url, autocommit=True) as conn:
        stored = dict(conn.execute("SELECT seq, wire_bytes FROM build_logs WHERE build_id = %s", (build.id,)).fetchall())
    assert len(logs) == 4
    for log in logs:
        assert items_bytes([log]) <= stored[log.sequence] <= items_bytes([log]) + 100, log.sequence


def test_events_of_maximum_data_page_and_stream_within_the_budget(api, build):
    data = struct_pb2.Struct()
    data.update({"blob": "d" * 65_000})
    for first in (1, 41):
        api.events.AppendBuildEvents(E.AppendBuildEventsRequest(
            build_id=build.id, entries=[E.EventEntry(type="bundle", data=data)] * 40, first_sequence=first))
    pages, token = [], ""
    while True:
        page = api.events.ListBuildEvents(E.ListBuildEventsRequest(build_id=build.id, after_sequence=5, page_token=token))
        pages.append(page)
        token = page.next_page_token
        if not token:
            break
    assert [e.sequence for p in pages for e in p.events] == list(range(6, 81))
    within_budget(pages, "events")
    streamed = list(api.events.StreamBuildEvents(E.StreamBuildEventsRequest(build_id=build.id), timeout=30))
    assert [e.sequence for r in streamed for e in r.events] == list(range(1, 81))
    within_budget(streamed, "events")
