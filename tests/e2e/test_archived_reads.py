"""Reads that cannot tell hot from archived: every read of a build answers
the same bytes before and after its logs and events are archived (and their
hot rows are gone), a tail fetches only the chunks it needs, a follower
reading while its build is archived gets every line once, and a lost chunk
or expired logs are said so, never a silent gap."""

from __future__ import annotations

import os
import threading
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import grpc
import psycopg
import pytest
from buildplatform.v1 import build_event_pb2 as E
from buildplatform.v1 import build_log_pb2 as L
from google.protobuf import struct_pb2, timestamp_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from server import migrate
from tests.archive_support import archive_build
from tests.e2e.streaming import append, error_info, finish, new_build, start_running
from tests.support import (
    ServerProcess,
    create_database,
    drop_database,
    free_port,
    running_server,
    stubs,
)

LEVELS = (L.LOG_LEVEL_INFO, L.LOG_LEVEL_WARN, L.LOG_LEVEL_ERROR, L.LOG_LEVEL_TOOL)
TYPES = ("step.started", "step.finished", "test.failed")
LOGS = "/buildplatform.v1.BuildLogService/"
EVENTS = "/buildplatform.v1.BuildEventService/"


@pytest.fixture(scope="module")
def own_database(postgres: str) -> Iterator[str]:
    url = create_database(postgres, "bp_archived")
    migrate.upgrade(url)
    yield url
    drop_database(postgres, url)


@pytest.fixture(scope="module")
def archive_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("archive"))


@pytest.fixture(scope="module")
def served(own_database: str, archive_dir: str) -> Iterator[ServerProcess]:
    # ARCHIVE=false: nothing is archived but what a test archives; the
    # server still reads ARCHIVE_URL's store. Small rings: followers fall
    # behind them and read the tiers themselves.
    with running_server(
        own_database, ARCHIVE_URL=archive_dir, ARCHIVE="false",
        FEED_RING_BYTES="20000", FEED_TOTAL_BYTES="40000",
    ) as proc:
        yield proc


@pytest.fixture(scope="module")
def channel(served: ServerProcess) -> Iterator[grpc.Channel]:
    with served.channel() as opened:
        yield opened


@pytest.fixture(scope="module")
def api(channel: grpc.Channel) -> SimpleNamespace:
    return stubs(channel)


def _serialize(message: Any) -> bytes:
    return message.SerializeToString()


def raw_list(channel: grpc.Channel, service: str, request: Any) -> bytes:
    """The List response exactly as the server wrote it."""
    call = channel.unary_unary(service + ("ListBuildLogs" if service == LOGS else "ListBuildEvents"),
                               request_serializer=_serialize, response_deserializer=None)
    data: bytes = call(request, timeout=30)
    return data


def raw_stream(channel: grpc.Channel, service: str, request: Any) -> list[bytes]:
    """The stream's messages exactly as the server wrote them."""
    call = channel.unary_stream(service + ("StreamBuildLogs" if service == LOGS else "StreamBuildEvents"),
                                request_serializer=_serialize, response_deserializer=None)
    return list(call(request, timeout=30))


def metric(proc: ServerProcess, name: str, **labels: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{proc.metrics_port}/metrics", timeout=10) as response:
        text = response.read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and all(f'{key}="{value}"' in line for key, value in labels.items()):
            total += float(line.rpartition(" ")[2])
    return total


# --- a random build and random reads of it --------------------------------------------

line = st.tuples(
    st.sampled_from(LEVELS),
    st.sampled_from([0, 1, 40, 300, 3000, 60000]),        # message length (big ones: messages cut on bytes)
    st.booleans(),                                          # with metadata
)
event = st.tuples(st.sampled_from(TYPES), st.integers(0, 3))


def make_build(api: SimpleNamespace, batches: list[list[tuple[int, int, bool]]], events: list[tuple[str, int]]) -> str:
    build_id = new_build(api).id
    start_running(api, build_id)
    n = 0
    for batch in batches:
        entries = []
        for level, length, with_metadata in batch:
            n += 1
            metadata = struct_pb2.Struct()
            if with_metadata:
                metadata.update({"n": n, "file": f"src/m{n}.py", "ok": n % 2 == 0})
            entries.append(L.LogEntry(level=level, message=f"{n} \x1b[1m" + "x" * length,
                                      metadata=metadata if with_metadata else None))
        append(api, build_id, entries)
        time.sleep(0.002)   # distinct create_times between batches, for since_time
    if events:
        api.events.AppendBuildEvents(E.AppendBuildEventsRequest(build_id=build_id, entries=[
            E.EventEntry(type=kind, data=struct_pb2.Struct(fields={"i": struct_pb2.Value(number_value=i)}))
            for kind, i in events
        ]))
    finish(api, build_id)
    return build_id


reads = st.lists(st.one_of(
    st.fixed_dictionaries({
        "read": st.just("list"), "page_size": st.sampled_from([0, 1, 7, 50]),
        "filter": st.lists(st.sampled_from(LEVELS), max_size=2, unique=True), "after": st.integers(0, 60),
    }),
    st.fixed_dictionaries({
        "read": st.just("list_events"), "page_size": st.sampled_from([0, 1, 3]),
        "filter": st.lists(st.sampled_from(TYPES), max_size=2, unique=True), "after": st.integers(0, 5),
    }),
    st.fixed_dictionaries({
        "read": st.just("stream"), "after": st.integers(0, 60), "tail": st.sampled_from([0, 1, 10, 1000]),
        "since": st.one_of(st.none(), st.integers(1, 80)), "follow": st.booleans(),
        "filter": st.lists(st.sampled_from(LEVELS), max_size=2, unique=True),
    }),
    st.fixed_dictionaries({
        "read": st.just("stream_events"), "after": st.integers(0, 5), "tail": st.sampled_from([0, 1, 2]),
        "follow": st.booleans(), "filter": st.lists(st.sampled_from(TYPES), max_size=2, unique=True),
    }),
), min_size=1, max_size=5)


def since_of(channel: grpc.Channel, build_id: str, index: int) -> timestamp_pb2.Timestamp:
    """The create_time of line `index` (or of the last line), a second later for odd indexes."""
    logs = L.ListBuildLogsResponse.FromString(raw_list(channel, LOGS, L.ListBuildLogsRequest(
        build_id=build_id, page_size=1000))).logs
    stamp = timestamp_pb2.Timestamp()
    stamp.CopyFrom(logs[min(index, len(logs)) - 1].create_time)
    if index % 2:
        stamp.FromDatetime(stamp.ToDatetime() + timedelta(microseconds=1))
    return stamp


def summary(read: dict[str, Any], answer: list[bytes]) -> list[tuple[Any, ...]]:
    """What differs, readably: per page or message, its items' sequences and cursor or token."""
    parse = {"list": L.ListBuildLogsResponse, "list_events": E.ListBuildEventsResponse,
             "stream": L.StreamBuildLogsResponse, "stream_events": E.StreamBuildEventsResponse}[read["read"]]
    out = []
    for data in answer:
        message = parse.FromString(data)
        items = message.logs if hasattr(message, "logs") else message.events
        out.append(([item.sequence for item in items], getattr(message, "cursor", None), len(data)))
    return out


def first_difference(one: list[bytes], other: list[bytes]) -> tuple[int, int, bytes, bytes] | None:
    for index, (a, b) in enumerate(zip(one, other, strict=False)):
        if a != b:
            at = next(i for i in range(min(len(a), len(b)) + 1) if i == min(len(a), len(b)) or a[i] != b[i])
            return index, at, a[max(0, at - 30):at + 30], b[max(0, at - 30):at + 30]
    return None


def run(channel: grpc.Channel, build_id: str, read: dict[str, Any], since: Any) -> list[bytes]:
    """What a read answers: every page (by page token) or every message."""
    kind = read["read"]
    if kind in ("list", "list_events"):
        service, request_type, response_type = (
            (LOGS, L.ListBuildLogsRequest, L.ListBuildLogsResponse) if kind == "list"
            else (EVENTS, E.ListBuildEventsRequest, E.ListBuildEventsResponse))
        field = "levels" if kind == "list" else "types"
        pages, token = [], ""
        while True:
            request = request_type(build_id=build_id, page_size=read["page_size"], after_sequence=read["after"],
                                   page_token=token, **{field: read["filter"]})
            pages.append(raw_list(channel, service, request))
            token = response_type.FromString(pages[-1]).next_page_token
            if not token:
                return pages
    if kind == "stream":
        request = L.StreamBuildLogsRequest(
            build_id=build_id, after_sequence=read["after"], tail_lines=read["tail"], follow=read["follow"],
            levels=read["filter"])
        if since is not None:
            request.since_time.CopyFrom(since)
        return raw_stream(channel, LOGS, request)
    request_e = E.StreamBuildEventsRequest(
        build_id=build_id, after_sequence=read["after"], tail_events=read["tail"], follow=read["follow"],
        types=read["filter"])
    return raw_stream(channel, EVENTS, request_e)


# No shrinking: each example runs a build through a real server; a failure
# prints its example as drawn.
@settings(derandomize=True, max_examples=12, deadline=None, phases=[Phase.explicit, Phase.generate],
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(
    batches=st.lists(st.lists(line, min_size=1, max_size=12), min_size=1, max_size=8),
    events=st.lists(event, max_size=8),
    chunk_bytes=st.sampled_from([200, 2000, 20000, 1 << 20]),
    chosen=reads,
)
def test_random_reads_answer_the_same_bytes_before_and_after_archiving(
    channel, own_database, archive_dir, api, batches, events, chunk_bytes, chosen
):
    build_id = make_build(api, batches, events)
    since = {i: since_of(channel, build_id, read["since"]) for i, read in enumerate(chosen) if read.get("since")}
    before = [run(channel, build_id, read, since.get(i)) for i, read in enumerate(chosen)]
    archive_build(own_database, archive_dir, build_id, chunk_bytes=chunk_bytes)
    after = [run(channel, build_id, read, since.get(i)) for i, read in enumerate(chosen)]
    for read, hot, archived in zip(chosen, before, after, strict=True):
        assert archived == hot, (read, summary(read, hot), summary(read, archived), first_difference(hot, archived))
    # Page tokens minted before archiving resume the same pages after it.
    for read, hot in zip(chosen, before, strict=True):
        if read["read"] != "list" or len(hot) < 2:
            continue
        token = L.ListBuildLogsResponse.FromString(hot[0]).next_page_token
        again = raw_list(channel, LOGS, L.ListBuildLogsRequest(
            build_id=build_id, page_size=read["page_size"], after_sequence=read["after"], levels=read["filter"],
            page_token=token))
        assert again == hot[1]


# --- a tail reads one chunk ----------------------------------------------------------------


def over_http(proc: ServerProcess, build_id: str) -> tuple[Any, ...]:
    """A List page over Connect JSON and a filtered tail over gRPC-Web."""
    http = proc.http()
    page = http.unary("buildplatform.v1.BuildLogService/ListBuildLogs", L.ListBuildLogsRequest(
        build_id=build_id, page_size=100, levels=[L.LOG_LEVEL_ERROR], after_sequence=17), L.ListBuildLogsResponse)
    tail = http.stream("buildplatform.v1.BuildLogService/StreamBuildLogs", L.StreamBuildLogsRequest(
        build_id=build_id, tail_lines=25, levels=[L.LOG_LEVEL_WARN]), L.StreamBuildLogsResponse, protocol="grpc-web")
    assert page.code == "OK" and tail.code == "OK" and len(page.response.logs) == 100
    return page.response, tail.messages


def test_a_tail_of_an_archived_build_fetches_only_its_last_chunk(served, channel, api, own_database, archive_dir):
    build_id = new_build(api).id
    start_running(api, build_id)
    for batch in range(10):   # 3,000 lines of about 1.2 KB: about 24 chunks of 150 KB
        append(api, build_id, [L.LogEntry(level=LEVELS[(batch * 300 + i) % 3], message=f"line {batch * 300 + i} " + "y" * 1200)
                               for i in range(300)])
    finish(api, build_id)
    hot = raw_stream(channel, LOGS, L.StreamBuildLogsRequest(build_id=build_id, tail_lines=10))
    catch_up = raw_stream(channel, LOGS, L.StreamBuildLogsRequest(build_id=build_id))
    http_hot = over_http(served, build_id)
    filtered_hot = raw_stream(channel, LOGS, L.StreamBuildLogsRequest(
        build_id=build_id, tail_lines=10, levels=[L.LOG_LEVEL_ERROR]))
    archive_build(own_database, archive_dir, build_id, chunk_bytes=150_000)
    with psycopg.connect(own_database) as conn:
        chunks = conn.execute("SELECT count(*) FROM archive_chunks WHERE build_id = %s AND kind = 'log'",
                              (build_id,)).fetchone()[0]
    assert chunks >= 15
    assert over_http(served, build_id) == http_hot   # Connect JSON and gRPC-Web alike
    # A catch-up of 3.6 MB: messages cut on the byte budget at the same lines.
    assert raw_stream(channel, LOGS, L.StreamBuildLogsRequest(build_id=build_id)) == catch_up
    assert len(catch_up) >= 3
    for request, expected in (
        (L.StreamBuildLogsRequest(build_id=build_id, tail_lines=10), hot),
        (L.StreamBuildLogsRequest(build_id=build_id, tail_lines=10, levels=[L.LOG_LEVEL_ERROR]), filtered_hot),
    ):
        reads = metric(served, "buildplatform_archive_chunk_reads_total", kind="log")
        assert raw_stream(channel, LOGS, request) == expected
        assert metric(served, "buildplatform_archive_chunk_reads_total", kind="log") - reads == 1


# --- a follower while its build is archived ------------------------------------------------


def test_followers_reading_while_their_build_is_archived_get_every_line_once(
    served, channel, api, own_database, archive_dir
):
    build_id = new_build(api).id
    start_running(api, build_id)
    total = 3000
    got: list[list[int]] = [[] for _ in range(4)]
    ends: list[BaseException | None] = [None] * 4
    archived = threading.Event()

    def follow(index: int) -> None:
        stream = api.logs.StreamBuildLogs(L.StreamBuildLogsRequest(build_id=build_id, follow=True), timeout=120)
        try:
            for count, response in enumerate(stream):
                got[index].extend(log.sequence for log in response.logs)
                if index and count == 3 * index:
                    archived.wait(60)   # mid-stream when the build is archived (HTTP/2 holds the rest)
        except grpc.RpcError as error:
            ends[index] = error

    followers = [threading.Thread(target=follow, args=(i,)) for i in range(4)]
    reads = metric(served, "buildplatform_archive_chunk_reads_total", kind="log")
    for thread in followers:
        thread.start()
    for batch in range(30):   # 6 MB
        append(api, build_id, [L.LogEntry(level=L.LOG_LEVEL_INFO, message=f"{batch} " + "z" * 2000)
                               for _ in range(total // 30)])
    finish(api, build_id)
    # Archived, and its hot rows dropped, while three followers are mid-stream.
    archive_build(own_database, archive_dir, build_id, chunk_bytes=50_000)
    archived.set()
    for thread in followers:
        thread.join(120)
        assert not thread.is_alive()
    assert ends == [None] * 4
    for seen in got:
        assert seen == list(range(1, total + 1))
    # The slow ones read the rest from the archive (the hot rows were gone).
    assert metric(served, "buildplatform_archive_chunk_reads_total", kind="log") > reads


# --- what is lost is said -----------------------------------------------------------------------


def test_a_missing_or_corrupt_chunk_is_data_loss_naming_build_and_chunk(served, channel, api, own_database, archive_dir):
    build_id = new_build(api).id
    start_running(api, build_id)
    append(api, build_id, [L.LogEntry(level=L.LOG_LEVEL_INFO, message=f"{i} " + "w" * 100) for i in range(200)])
    finish(api, build_id)
    (key,) = archive_build(own_database, archive_dir, build_id, chunk_bytes=5000).keys
    path = Path(archive_dir) / key
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF                     # a flipped byte in the middle chunk
    path.write_bytes(bytes(data))
    errors = metric(served, "buildplatform_archive_read_errors_total", kind="log", reason="corrupt")
    with pytest.raises(grpc.RpcError) as caught:
        raw_stream(channel, LOGS, L.StreamBuildLogsRequest(build_id=build_id))
    assert caught.value.code() is grpc.StatusCode.DATA_LOSS
    info = error_info(caught.value)
    assert info.reason == "ARCHIVE_CHUNK_CORRUPT" and info.metadata["build_id"] == build_id
    assert f"chunk {info.metadata['chunk']} of build {build_id!r}" in caught.value.details()
    assert metric(served, "buildplatform_archive_read_errors_total", kind="log", reason="corrupt") == errors + 1
    assert f"chunk {info.metadata['chunk']} of build {build_id!r}" in served.log()

    os.remove(path)
    with pytest.raises(grpc.RpcError) as caught:
        raw_list(channel, LOGS, L.ListBuildLogsRequest(build_id=build_id))
    assert caught.value.code() is grpc.StatusCode.DATA_LOSS
    assert error_info(caught.value).reason == "ARCHIVE_CHUNK_MISSING"
    assert error_info(caught.value).metadata["chunk"] == "0"


def test_expired_logs_are_failed_precondition_logs_expired_with_the_time(channel, api, own_database):
    build_id = new_build(api).id
    start_running(api, build_id)
    append(api, build_id, [L.LogEntry(level=L.LOG_LEVEL_INFO, message="gone soon")])
    finish(api, build_id)
    when = datetime(2026, 3, 4, 5, 6, 7, 890000, tzinfo=UTC)
    with psycopg.connect(own_database, autocommit=True) as conn:
        conn.execute("UPDATE builds SET archive_state = 'expired', expire_time = %s WHERE id = %s", (when, build_id))
    for call in (
        lambda: raw_list(channel, LOGS, L.ListBuildLogsRequest(build_id=build_id)),
        lambda: raw_stream(channel, LOGS, L.StreamBuildLogsRequest(build_id=build_id, follow=True)),
        lambda: raw_stream(channel, EVENTS, E.StreamBuildEventsRequest(build_id=build_id, tail_events=3)),
    ):
        with pytest.raises(grpc.RpcError) as caught:
            call()
        assert caught.value.code() is grpc.StatusCode.FAILED_PRECONDITION
        info = error_info(caught.value)
        assert info.reason == "LOGS_EXPIRED"
        assert info.metadata["expire_time"] == "2026-03-04T05:06:07.890000Z"
        assert "expired at 2026-03-04T05:06:07.890000Z" in caught.value.details()


def test_an_unreachable_object_store_is_unavailable_with_retry_advice_within_the_deadline(
    channel, api, own_database, archive_dir
):
    build_id = new_build(api).id
    start_running(api, build_id)
    append(api, build_id, [L.LogEntry(level=L.LOG_LEVEL_INFO, message=f"{i}") for i in range(20)])
    finish(api, build_id)
    archive_build(own_database, archive_dir, build_id)
    # A replica whose object store (S3 at a port nobody listens on) cannot be reached.
    nobody = f"http://127.0.0.1:{free_port()}"
    with running_server(
        own_database, ARCHIVE_URL="s3://logs/archive", ARCHIVE="false", AWS_ENDPOINT_URL=nobody,
        AWS_ALLOW_HTTP="true", AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test", AWS_REGION="us-east-1",
    ) as replica, replica.channel() as unreachable:
        for call in (
            lambda: raw_list(unreachable, LOGS, L.ListBuildLogsRequest(build_id=build_id)),
            lambda: raw_stream(unreachable, LOGS, L.StreamBuildLogsRequest(build_id=build_id, after_sequence=4)),
        ):
            began = time.monotonic()
            with pytest.raises(grpc.RpcError) as caught:
                call()
            assert time.monotonic() - began < 10
            assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
            assert "retry" in caught.value.details()
            status = rpc_status.from_call(caught.value)
            assert any(detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR) for detail in status.details)
        assert error_info(caught.value).metadata["after_sequence"] == "4"   # the stream says where to resume
