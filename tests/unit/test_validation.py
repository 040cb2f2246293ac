"""Input rules: what is refused before anything reaches PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from google.protobuf import field_mask_pb2

from server.core.wire import mask_paths, parse_etag
from server.domain.errors import FieldViolation, InvalidArgument
from server.domain.validation import Checker


def violations(check: Checker) -> dict[str, str]:
    return {v.field: v.description for v in check.violations}


def test_a_checker_without_violations_passes():
    check = Checker()
    check.text("name", "fine", required=True, max_chars=10)
    check.done()


def test_a_checker_collects_every_violation_before_raising():
    check = Checker()
    check.text("a", "", required=True)
    check.id("b", "nope")
    check.email("c", "no-at-sign")
    with pytest.raises(InvalidArgument) as caught:
        check.done()
    assert [v.field for v in caught.value.violations] == ["a", "b", "c"]
    assert "(and 2 more)" in caught.value.message


@pytest.mark.parametrize("value", ["", "   ", "\n\t"])
def test_required_text_must_not_be_blank(value):
    check = Checker()
    check.text("f", value, required=True)
    assert "f" in violations(check)


def test_text_with_nul_is_refused():
    check = Checker()
    check.text("f", "a\x00b")
    assert "NUL" in violations(check)["f"]


def test_text_length_is_counted_in_characters_and_bytes():
    check = Checker()
    check.text("chars", "é" * 11, max_chars=10)
    check.text("bytes_ok", "é" * 5, max_bytes=10)
    check.text("bytes_over", "é" * 6, max_bytes=10)
    assert set(violations(check)) == {"chars", "bytes_over"}


@pytest.mark.parametrize("value", ["c" + "a" * 24, "cmwvqyjbd001l7h7do4lx9l3s"])
def test_a_cuid_is_a_valid_id(value):
    check = Checker()
    check.id("id", value)
    check.done()


@pytest.mark.parametrize("value", ["", "x" + "a" * 24, "c" + "A" * 24, "c" + "a" * 23, "c" + "a" * 25, "c" + "a" * 23 + "-"])
def test_anything_else_is_not_an_id(value):
    check = Checker()
    check.id("id", value)
    assert "id" in violations(check)


def test_an_optional_id_may_be_empty():
    check = Checker()
    check.id("id", "", required=False)
    check.done()


@pytest.mark.parametrize(
    ("value", "path"),
    [
        ({"a\x00": 1}, "p.'a\\x00'"),
        ({"a": {"b": "x\x00"}}, "p.a.b"),
        ({"a": [1, "ok", "\x00"]}, "p.a[2]"),
        ({"n": float("nan")}, "p.n"),
        ({"l": [{"x": float("inf")}]}, "p.l[0].x"),
        ({"m": float("-inf")}, "p.m"),
    ],
)
def test_json_refuses_what_jsonb_refuses_naming_the_path(value, path):
    check = Checker()
    assert check.json("p", value, max_bytes=1000) is None
    assert path in violations(check)


def test_json_is_serialized_compactly_and_limited_in_bytes():
    check = Checker()
    assert check.json("p", {"a": [1, 2.5, None, True]}, max_bytes=100) == '{"a":[1,2.5,null,true]}'
    check.json("big", {"k": "é" * 10}, max_bytes=20)
    assert list(violations(check)) == ["big"]


def test_absent_json_is_none_and_valid():
    check = Checker()
    assert check.json("p", None, max_bytes=10) is None
    check.done()


@pytest.mark.parametrize(("value", "expected"), [(0, 50), (1, 1), (1000, 1000)])
def test_page_size_zero_means_the_default(value, expected):
    check = Checker()
    assert check.page_size("page_size", value, default=50, maximum=1000) == expected
    check.done()


@pytest.mark.parametrize("value", [-1, 1001, 2**31 - 1])
def test_page_size_out_of_range_is_refused(value):
    check = Checker()
    check.page_size("page_size", value, default=50, maximum=1000)
    assert "page_size" in violations(check)


def test_mask_star_means_every_mutable_field():
    assert mask_paths(field_mask_pb2.FieldMask(paths=["*"]), ("a", "b")) == ["a", "b"]


def test_mask_names_the_index_of_each_bad_path():
    with pytest.raises(InvalidArgument) as caught:
        mask_paths(field_mask_pb2.FieldMask(paths=["a", "id", "zzz"]), ("a",), immutable=("id",))
    fields = {v.field: v.description for v in caught.value.violations}
    assert set(fields) == {"update_mask.paths[1]", "update_mask.paths[2]"}
    assert "cannot be changed" in fields["update_mask.paths[1]"]


def test_an_empty_mask_is_refused():
    with pytest.raises(InvalidArgument) as caught:
        mask_paths(field_mask_pb2.FieldMask(), ("a",))
    assert caught.value.violations[0].field == "update_mask"


@pytest.mark.parametrize(("value", "expected"), [("", None), ("1", 1), ("42", 42)])
def test_an_etag_is_a_revision(value, expected):
    assert parse_etag("etag", value) == expected


@pytest.mark.parametrize("value", ["x", "-1", "1.0", "1" * 19, "\u0661", "\u00b2"])
def test_a_forged_etag_is_refused(value):
    with pytest.raises(InvalidArgument) as caught:
        parse_etag("etag", value)
    assert caught.value.violations[0].field == "etag"


def test_many_violations_keep_the_first_twenty_clipped_and_count_the_rest():
    check = Checker()
    for index in range(5000):
        check.add(f"entries[{index}].{'k' * 1000}", "d" * 10_000)
    with pytest.raises(InvalidArgument) as caught:
        check.done()
    kept = caught.value.violations
    assert len(kept) == 21 and caught.value.total == 5000
    assert kept[0].field.startswith("entries[0].k") and kept[19].field.startswith("entries[19].")
    assert all(len(v.field) <= 100 and len(v.description) <= 200 for v in kept)
    assert kept[-1] == FieldViolation("request", "4980 more invalid fields are not listed; fix those above and retry")
    assert caught.value.message.endswith("(and 4999 more)") and len(caught.value.message) < 400


@pytest.mark.parametrize(
    ("seconds", "nanos", "field"),
    [
        (253_402_300_800, 0, "t"), (-62_135_596_801, 0, "t"), (2**63 - 1, 0, "t"), (-(2**63), 0, "t"),
        (0, -1, "t.nanos"), (0, 1_000_000_000, "t.nanos"),
    ],
)
def test_a_timestamp_outside_its_range_is_a_violation(seconds, nanos, field):
    check = Checker()
    assert check.timestamp("t", seconds, nanos) is None
    assert field in violations(check)


def test_a_timestamp_at_its_ends_is_exact_to_the_microsecond():
    check = Checker()
    assert check.timestamp("t", -62_135_596_800, 0) == datetime(1, 1, 1, tzinfo=UTC)
    assert check.timestamp("t", 253_402_300_799, 999_999_999) == datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC)
    assert check.violations == []


@pytest.mark.parametrize("etag", ["2147483648", "9999999999", "99999999999", "-0"])
def test_an_etag_beyond_any_revision_is_not_one_this_api_issued(etag):
    with pytest.raises(InvalidArgument):
        parse_etag("etag", etag)
    assert parse_etag("etag", "2147483647") == 2**31 - 1
