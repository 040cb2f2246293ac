"""Page tokens: opaque, tamper-evident, bound to the request's filters."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import pytest

from server.core.pagination import PageTokens
from server.domain.errors import InvalidArgument

AFTER = (datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC), "c" + "a" * 24)


def test_a_token_round_trips_the_position():
    tokens = PageTokens("secret")
    token = tokens.encode_keyset("builds", ["u", "p", ["RUNNING"]], AFTER)
    assert tokens.decode_keyset(token, "builds", ["u", "p", ["RUNNING"]]) == AFTER


def test_no_more_rows_is_the_empty_token_and_empty_means_first_page():
    tokens = PageTokens("secret")
    assert tokens.encode_keyset("builds", [], None) == ""
    assert tokens.decode_keyset("", "builds", []) is None


def test_a_token_does_not_show_the_filters_in_clear():
    token = PageTokens("secret").encode_keyset("users", ["someone@example.com"], AFTER)
    assert "someone" not in base64.urlsafe_b64decode(token.split(".")[0] + "==").decode()


def test_a_token_with_other_filters_is_refused():
    tokens = PageTokens("secret")
    token = tokens.encode_keyset("builds", ["u1"], AFTER)
    with pytest.raises(InvalidArgument, match="other filters"):
        tokens.decode_keyset(token, "builds", ["u2"])


def test_a_token_of_another_list_is_refused():
    tokens = PageTokens("secret")
    token = tokens.encode_keyset("builds", [""], AFTER)
    with pytest.raises(InvalidArgument):
        tokens.decode_keyset(token, "projects", [""])


def test_a_token_signed_with_another_secret_is_refused():
    token = PageTokens("one").encode_keyset("builds", [], AFTER)
    with pytest.raises(InvalidArgument, match="not a page token"):
        PageTokens("two").decode_keyset(token, "builds", [])


def test_an_edited_body_is_refused_even_when_it_is_valid_json():
    tokens = PageTokens("secret")
    token = tokens.encode_keyset("builds", [], AFTER)
    body, tag = token.split(".")
    data = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    data["p"][1] = "c" + "z" * 24
    forged = base64.urlsafe_b64encode(json.dumps(data, separators=(",", ":")).encode()).rstrip(b"=").decode()
    with pytest.raises(InvalidArgument):
        tokens.decode_keyset(f"{forged}.{tag}", "builds", [])


@pytest.mark.parametrize("token", ["x", ".", "a.b.c", "!!!.???", "e30.AAAA", "\u00e9"])
def test_garbage_is_refused_as_page_token(token):
    with pytest.raises(InvalidArgument) as caught:
        PageTokens("secret").decode_keyset(token, "builds", [])
    assert caught.value.violations[0].field == "page_token"


def test_every_flipped_character_is_detected():
    tokens = PageTokens("secret")
    token = tokens.encode_keyset("builds", [], AFTER)
    for index, char in enumerate(token):
        if char == ".":
            continue
        flipped = token[:index] + ("A" if char != "A" else "B") + token[index + 1 :]
        try:
            position = tokens.decode_keyset(flipped, "builds", [])
        except InvalidArgument:
            continue
        # A flip in base64 padding bits can decode to the same bytes: still the same position.
        assert position == AFTER, index
