"""server.live.search.Query: the page search (candidates) never misses a
line that matches on its own, whatever the pattern; bad patterns are refused."""

from __future__ import annotations

import pytest

from server.domain.errors import InvalidArgument
from server.live.search import Query, message_of

LINES = [b"", b"error 42", b"warning: x", b"a\nb", b"abc", b"xxaxx", b"\xc3\xa9t\xc3\xa9", b"ERROR", b"z",
         b"error", b"end$", b"^start", b"  error  ", b"foo bar baz", b"aaaa"]
PATTERNS = [
    ("error", False, False), ("ERROR", False, True), ("a\nb", False, False), ("r 4", False, False),
    (r"^error", True, False), (r"error$", True, False), (r"^$", True, False), (r"\berror\b", True, False),
    (r"a*", True, False), (r"^a", True, False), (r"b$", True, False), (r"(?s).", True, False),
    (r"[^a]+", True, False), (r"\Aerror", True, False), (r"error\z", True, False), (r"(?-m)^a", True, False),
    (r"(?i)^err", True, False), (r"\n", True, False), (r"x+a", True, False), (r"É", True, True),
    (r"baz$", True, False), (r"^\s+error", True, False), (r"t\z", True, False),
]


@pytest.mark.parametrize(("pattern", "regex", "ignore_case"), PATTERNS)
def test_the_page_search_keeps_every_matching_line(pattern, regex, ignore_case):
    query = Query(pattern, regex=regex, ignore_case=ignore_case)
    for start in range(len(LINES)):
        page = LINES[start:] + LINES[:start]   # every line first and last in turn
        matching = [i for i, line in enumerate(page) if query.spans(line)]
        candidates = list(query.candidates(page))
        assert set(matching) <= set(candidates), (pattern, page)
        assert candidates == sorted(set(candidates))


def test_literal_spans_are_byte_offsets():
    assert Query("é", regex=False, ignore_case=False).spans("naïve é é".encode()) == [(7, 9), (10, 12)]
    assert Query("É", regex=False, ignore_case=True).spans("é".encode()) == [(0, 2)]


@pytest.mark.parametrize("pattern", ["", "x" * 1025, "a(b", "(a{1000}){1000}", "a\x00"])
def test_bad_patterns_are_refused_naming_the_field(pattern):
    with pytest.raises(InvalidArgument) as refused:
        Query(pattern, regex=True, ignore_case=False)
    assert [violation.field for violation in refused.value.violations] == ["query"]


def test_message_of_reads_field_5_of_the_wire():
    from buildplatform.v1 import build_log_pb2
    from google.protobuf import struct_pb2

    from server.live.records import repeated_field_1

    metadata = struct_pb2.Struct()
    metadata.update({"k": "v"})
    for message in ("", "hello", "x" * 70_000):
        log = build_log_pb2.BuildLog(id=300, build_id="c" * 25, sequence=129, level=3, message=message, metadata=metadata)
        assert message_of(repeated_field_1(log.SerializeToString())) == message.encode()
