"""BuildLogService.SearchBuildLogs: literal and RE2 searches of one build's
log, hot and archived, through the generated stubs (and Connect over HTTP)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import grpc
import psycopg
import pytest
from buildplatform.v1 import build_log_pb2 as L

from tests.archive_support import archive_build
from tests.e2e.streaming import (
    ERROR,
    INFO,
    TOOL,
    WARN,
    append,
    error_info,
    finish,
    lines,
    new_build,
    violations,
)
from tests.support import ServerProcess, running_server, stubs


@pytest.fixture(scope="module")
def archive_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("archive")


@pytest.fixture(scope="module")
def searcher(database_url: str, archive_dir: Path) -> Iterator[ServerProcess]:
    """A server reading archives from archive_dir (and archiving nothing
    itself: the tests archive a build when they choose)."""
    with running_server(database_url, ARCHIVE_URL=str(archive_dir), ARCHIVE="false") as proc:
        yield proc


@pytest.fixture(scope="module")
def sapi(searcher: ServerProcess) -> Iterator[SimpleNamespace]:
    channel = searcher.channel()
    yield stubs(channel)
    channel.close()


def search(api: SimpleNamespace, build_id: str, query: str, **request: Any) -> list[L.SearchBuildLogsResponse]:
    return list(api.logs.SearchBuildLogs(L.SearchBuildLogsRequest(build_id=build_id, query=query, **request),
                                         timeout=60))


def hits(responses: list[L.SearchBuildLogsResponse]) -> list[tuple[int, bool, list[tuple[int, int]]]]:
    """(sequence, context, spans) of every hit, in the order sent."""
    return [(hit.sequence, hit.context, [(span.start, span.end) for span in hit.spans])
            for response in responses for hit in response.hits]


def matched(responses: list[L.SearchBuildLogsResponse]) -> list[int]:
    return [hit.sequence for response in responses for hit in response.hits if not hit.context]


def refused(call: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as raised:
        call()
    return raised.value


def test_a_literal_search_streams_matches_with_their_byte_spans(sapi):
    build = new_build(sapi)
    append(sapi, build.id, lines("compiling", "naïve needle here", "no", "needle, needle", "Needle"))
    responses = search(sapi, build.id, "needle")
    assert hits(responses) == [(2, False, [(7, 13)]), (4, False, [(0, 6), (8, 14)])]
    found = [hit for response in responses for hit in response.hits]
    assert [hit.log.message for hit in found] == ["naïve needle here", "needle, needle"]
    assert found[0].log.sequence == 2 and found[0].log.build_id == build.id
    # Byte offsets: "naïve " is 7 bytes of UTF-8.
    message = found[0].log.message.encode()
    assert message[found[0].spans[0].start:found[0].spans[0].end] == b"needle"
    last = responses[-1]
    assert last.done and last.cursor == 5 and last.match_count == 2
    # A literal is not a regular expression.
    append(sapi, build.id, lines("a.c", "abc"))
    assert matched(search(sapi, build.id, "a.c")) == [6]


def test_a_regular_expression_is_re2(sapi):
    build = new_build(sapi)
    append(sapi, build.id, lines("error 42 in main.c", "errno 7", "error: none", "ERROR 9"))
    responses = search(sapi, build.id, r"err(or|no)\s+\d+", regex=True)
    assert hits(responses) == [(1, False, [(0, 8)]), (2, False, [(0, 7)])]
    assert matched(search(sapi, build.id, r"^error\b", regex=True)) == [1, 3]


def test_ignore_case_folds_unicode_too(sapi):
    build = new_build(sapi)
    append(sapi, build.id, lines("Needle", "nEEDLE", "haystack", "CAFÉ", "café"))
    assert matched(search(sapi, build.id, "needle", ignore_case=True)) == [1, 2]
    assert matched(search(sapi, build.id, "needle")) == []
    assert matched(search(sapi, build.id, "café", ignore_case=True)) == [4, 5]
    assert matched(search(sapi, build.id, "caf.", regex=True, ignore_case=True)) == [4, 5]


def test_the_level_filter_chooses_which_lines_may_match(sapi):
    build = new_build(sapi)
    append(sapi, build.id, lines("disk full", level=INFO) + lines("disk full", level=ERROR)
           + lines("disk full", level=WARN) + lines("disk full", level=TOOL))
    assert matched(search(sapi, build.id, "disk", levels=[ERROR, WARN])) == [2, 3]
    assert matched(search(sapi, build.id, "disk")) == [1, 2, 3, 4]


def test_context_lines_come_once_each_in_order(sapi):
    build = new_build(sapi)
    messages = [f"line {i}" for i in range(1, 21)]
    for at in (5, 7, 15):
        messages[at - 1] = f"HIT {at}"
    append(sapi, build.id, lines(*messages))
    got = hits(search(sapi, build.id, "HIT", context_lines=2))
    assert [(seq, context) for seq, context, _ in got] == [
        (3, True), (4, True), (5, False), (6, True), (7, False), (8, True), (9, True),
        (13, True), (14, True), (15, False), (16, True), (17, True),
    ]
    # Context lines are the log's neighbours whatever their level.
    build2 = new_build(sapi)
    append(sapi, build2.id, lines("before", level=TOOL) + lines("boom", level=ERROR) + lines("after", level=INFO))
    assert [(s, c) for s, c, _ in hits(search(sapi, build2.id, "o", levels=[ERROR], context_lines=1))] == [
        (1, True), (2, False), (3, True)]


def test_a_resumed_search_gives_the_rest_exactly_once(sapi):
    build = new_build(sapi)
    messages = [f"line {i}" for i in range(1, 41)]
    for at in (1, 2, 6, 9, 10, 18, 30, 31, 39, 40):
        messages[at - 1] = f"match {at}"
    append(sapi, build.id, lines(*messages))
    for context in (0, 1, 3):
        whole = hits(search(sapi, build.id, "match", context_lines=context))
        # From every cursor the rest is the end of the whole answer: every
        # hit after the cursor, and before it only the context lines still
        # owed to a match after it (sent with that match).
        for cursor in range(0, 41):
            rest = hits(search(sapi, build.id, "match", context_lines=context, after_sequence=cursor))
            assert rest == whole[len(whole) - len(rest):], (context, cursor)
            assert [hit for hit in rest if hit[0] > cursor] == [hit for hit in whole if hit[0] > cursor]
            assert all(c and seq > cursor - context for seq, c, _ in rest if seq <= cursor), (context, cursor)
        # max_matches cuts; resuming from each last cursor rebuilds the whole.
        pieces, cursor, calls = [], 0, 0
        while True:
            part = search(sapi, build.id, "match", context_lines=context, max_matches=3, after_sequence=cursor)
            calls += 1
            pieces += hits(part)
            assert sum(1 for _, c, _ in hits(part) if not c) <= 3
            cursor = part[-1].cursor
            if part[-1].done:
                break
        assert pieces == whole and calls == 4, context


def test_a_pathological_regular_expression_answers_fast(sapi):
    build = new_build(sapi)
    append(sapi, build.id, lines(*["a" * 60_000 + "!" for _ in range(20)]))
    started = time.monotonic()
    responses = search(sapi, build.id, "(a+)+$", regex=True)
    assert matched(responses) == [] and responses[-1].done
    assert time.monotonic() - started < 5   # backtracking would take longer than the universe has
    started = time.monotonic()
    assert matched(search(sapi, build.id, "(x+x+)+y|(a|aa)+b", regex=True, ignore_case=True)) == []
    assert time.monotonic() - started < 5


def test_bad_requests_are_invalid_argument_naming_the_field(sapi):
    build = new_build(sapi)
    append(sapi, build.id, lines("x"))
    cases = [
        ({"query": ""}, "query"),
        ({"query": "x" * 1025}, "query"),
        ({"query": "a(b", "regex": True}, "query"),
        ({"query": "(a{1000}){1000}", "regex": True}, "query"),
        ({"query": "x", "context_lines": 11}, "context_lines"),
        ({"query": "x", "max_matches": 100_001}, "max_matches"),
        ({"query": "x", "after_sequence": -1}, "after_sequence"),
        ({"query": "x", "levels": [0]}, "levels[0]"),
    ]
    for request, field in cases:
        error = refused(lambda request=request: search(sapi, build.id, **request))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, request
        assert field in violations(error), (request, violations(error))
    error = refused(lambda: search(sapi, build.id, "a(b", regex=True))
    assert "missing )" in violations(error)["query"]


def test_a_missing_build_is_not_found_and_expired_logs_are_logs_expired(sapi, database_url):
    error = refused(lambda: search(sapi, "cnosuchbuild0000000000000", "x"))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    build = new_build(sapi)
    append(sapi, build.id, lines("x"))
    finish(sapi, build.id)
    with psycopg.connect(database_url, autocommit=True) as pg:
        pg.execute("UPDATE builds SET archive_state = 'expired', expire_time = now() WHERE id = %s", (build.id,))
    error = refused(lambda: search(sapi, build.id, "x"))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_info(error).reason == "LOGS_EXPIRED"


def _mixed_build(api: SimpleNamespace) -> str:
    """~3,000 lines of every level and size, some unicode, spanning chunks."""
    build = new_build(api)
    levels = [INFO, INFO, TOOL, WARN, INFO, ERROR]
    entries = []
    for i in range(1, 3001):
        text = f"step {i} " + ("compiling module ünïcode " if i % 7 == 0 else "ok ") + "." * (i % 97)
        if i % 250 == 0:
            text += " FATAL needle"
        entries.append(L.LogEntry(level=levels[i % len(levels)], message=text))
    for start in range(0, len(entries), 1000):
        append(api, build.id, entries[start:start + 1000])
    finish(api, build.id)
    return build.id


SEARCHES: list[dict[str, Any]] = [
    {"query": "needle"},
    {"query": "NEEDLE", "ignore_case": True},
    {"query": r"step \d*7 (ok|comp)", "regex": True},
    {"query": "ünïcode", "levels": [ERROR, WARN], "context_lines": 2},
    {"query": "ok", "max_matches": 700, "context_lines": 1},
    {"query": "ok", "omit_lines": True, "max_matches": 5000},
    {"query": "step 29", "after_sequence": 1234, "context_lines": 3},
]


def _answers(api: SimpleNamespace, build_id: str) -> list[tuple[list[bytes], int, bool, int]]:
    """Each search's hits (serialized, as sent) and its last cursor, done and count."""
    out = []
    for request in SEARCHES:
        responses = search(api, build_id, **request)
        last = responses[-1]
        out.append(([hit.SerializeToString() for r in responses for hit in r.hits], last.cursor, last.done,
                    last.match_count))
    return out


def test_hot_and_archived_logs_answer_the_same(sapi, database_url, archive_dir):
    build_id = _mixed_build(sapi)
    hot = _answers(sapi, build_id)
    assert [len(h) for h, *_ in hot][:2] == [12, 12]
    assert hot[4][1] < 3000 and not hot[4][2] and hot[4][3] == 700   # max_matches cut it
    assert archive_build(database_url, str(archive_dir), build_id, chunk_bytes=64 * 1024, drop_hot=False).chunks > 3
    with psycopg.connect(database_url) as pg:
        assert pg.execute("SELECT archive_state FROM builds WHERE id = %s", (build_id,)).fetchone() == ("archived",)
        # The hot rows are no longer read: make sure by changing them.
        pg.execute("UPDATE build_logs SET message = 'gone' WHERE build_id = %s", (build_id,))
    archived = _answers(sapi, build_id)
    assert archived == hot


def test_connect_over_http_serves_the_same_search(searcher, sapi):
    build = new_build(sapi)
    append(sapi, build.id, lines("alpha", "needle one", "beta", "needle two"))
    request = L.SearchBuildLogsRequest(build_id=build.id, query="needle", context_lines=1)
    over_grpc = hits(list(sapi.logs.SearchBuildLogs(request, timeout=30)))
    client = searcher.http()
    for codec in ("json", "proto"):
        outcome = client.stream("buildplatform.v1.BuildLogService/SearchBuildLogs", request,
                                L.SearchBuildLogsResponse, codec=codec)
        assert outcome.code == "OK", outcome.message
        assert hits(outcome.messages) == over_grpc, codec
        assert outcome.messages[-1].done
    bad = client.stream("buildplatform.v1.BuildLogService/SearchBuildLogs",
                        L.SearchBuildLogsRequest(build_id=build.id, query="(", regex=True),
                        L.SearchBuildLogsResponse, codec="json")
    assert bad.code == "INVALID_ARGUMENT" and "query" in bad.message


def test_a_long_search_sends_progress_and_stops_before_the_deadline(sapi):
    build = new_build(sapi)
    for start in range(0, 60_000, 5000):
        append(sapi, build.id, lines(*[f"quiet line {i}" for i in range(start, start + 5000)]))
    started = time.monotonic()
    stream = sapi.logs.SearchBuildLogs(
        L.SearchBuildLogsRequest(build_id=build.id, query="x+y", regex=True), timeout=1.0)
    responses = list(stream)   # ends OK, in time
    assert time.monotonic() - started < 1.0
    last = responses[-1]
    if not last.done:
        # Cut by the deadline: resuming from the cursor finishes the scan.
        assert 0 < last.cursor < 60_000
        rest = search(sapi, build.id, "x+y", regex=True, after_sequence=last.cursor)
        assert rest[-1].done and rest[-1].cursor == 60_000
    else:
        assert last.cursor == 60_000
