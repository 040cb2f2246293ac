"""The log text's pieces without a server: the ANSI stripper on real
sequences, the rendering of one entry, the offset marks, the Range parser."""

from __future__ import annotations

import pytest

from server.core import log_text
from server.core.log_text import Line, Marks, TextOptions, render, strip_ansi, timestamp
from server.domain.errors import InvalidArgument
from server.http.log_download import accepts_gzip, options_of, parse_range, resolve

# (written by a real program, what a reader should see)
SEQUENCES = [
    ("\x1b[31merror\x1b[0m", "error"),                                   # SGR
    ("\x1b[1;38;5;196mbold 256\x1b[m", "bold 256"),                      # SGR, 256 colours
    ("\x1b[38;2;255;100;0mtrue colour\x1b[39m", "true colour"),          # SGR, 24-bit
    ("\x1b[38:2::255:100:0mcolon form\x1b[0m", "colon form"),            # SGR, ITU T.416 colons
    ("\x1b[2K\x1b[1G  50% done", "  50% done"),                          # erase line, column
    ("\x1b[?25l\x1b[?1049hscreen\x1b[?1049l\x1b[?25h", "screen"),        # DEC private modes
    ("\x1b[1A\x1b[2Jup", "up"),                                          # cursor up, clear
    ("\x1b]0;window title\x07after", "after"),                           # OSC, BEL
    ("\x1b]8;;https://example.com\x1b\\link\x1b]8;;\x1b\\", "link"),      # OSC 8 hyperlink, ST
    ("\x1b]133;A\x1b\\$ ls", "$ ls"),                                    # shell integration
    ("\x1bP+q544e\x1b\\dcs", "dcs"),                                     # DCS
    ("\x1b_Gf=100;AAAA\x1b\\kitty", "kitty"),                            # APC (kitty graphics)
    ("\x1b^private\x1b\\pm", "pm"),                                      # PM
    ("\x1b(B\x1b)0charset", "charset"),                                  # nF: designate G0/G1
    ("\x1b7saved\x1b8", "saved"),                                        # Fp: DECSC/DECRC
    ("\x1bcreset\x1bM", "reset"),                                        # Fs: RIS, Fe: RI
    ("\x1b=\x1b>keypad", "keypad"),                                      # DECKPAM/DECKPNM
    ("\x9b31mC1 CSI\x9b0m", "C1 CSI"),                                    # 8-bit CSI
    ("\x9d0;t\x9cC1 OSC", "C1 OSC"),                                     # 8-bit OSC and ST
    ("\x90q\x9cC1 DCS", "C1 DCS"),                                       # 8-bit DCS
]
KEPT = ["tab\there", "carriage\rreturn", "bell\x07alone", "caf\u00e9 \U0001f680", "[31m without ESC", ""]
CUT_SHORT = [
    ("text\x1b", "text"),                       # a lone ESC at the end
    ("text\x1b[", "text"),                      # CSI with nothing after it
    ("text\x1b[38;5", "text"),                  # CSI without its final byte
    ("a\x1b[12\u00e9b", "a\u00e9b"),             # a byte that cannot belong to it stops it, and stays
    ("a\x1b]0;no terminator", "a"),             # OSC to the end of the message
    ("a\x1b]0;title\x1b[31mred", "ared"),        # OSC cut by the next sequence's ESC
    ("a\x1b\x1b[31mb", "ab"),                   # ESC ESC: the first has nothing after it
]


@pytest.mark.parametrize(("raw", "seen"), SEQUENCES + CUT_SHORT)
def test_strip_removes_each_escape_sequence(raw: str, seen: str):
    assert strip_ansi(raw) == seen


@pytest.mark.parametrize("text", KEPT)
def test_strip_keeps_text_and_other_controls(text: str):
    assert strip_ansi(text) == text


def test_strip_of_a_whole_line_of_compiler_output():
    line = ("\x1b[0m\x1b[1m\x1b[38;5;9merror[E0308]\x1b[0m\x1b[0m\x1b[1m: mismatched types\x1b[0m\n"
            "  \x1b[0m\x1b[1m\x1b[38;5;12m-->\x1b[0m src/main.rs:4:5")
    assert strip_ansi(line) == "error[E0308]: mismatched types\n  --> src/main.rs:4:5"


STAMP = 1796618080  # 2026-12-07T04:34:40Z


def test_render_one_line_per_entry_with_fixed_width_prefixes():
    lines = [
        Line(1, "info", "\x1b[32mok\x1b[0m", STAMP, 123_456_000),
        Line(2, "error", "two\nlines", STAMP, 0),
        Line(3, "tool", "", STAMP + 1, 999_999_000),
    ]
    assert render(lines, TextOptions()) == b"\x1b[32mok\x1b[0m\ntwo\nlines\n\n"
    assert render(lines, TextOptions(strip_ansi=True, timestamps=True, levels=True)).decode() == (
        "2026-12-07T04:34:40.123456Z INFO  ok\n"
        "2026-12-07T04:34:40.000000Z ERROR two\nlines\n"
        "2026-12-07T04:34:41.999999Z TOOL  \n"
    )
    assert timestamp(0, 5_000) == "1970-01-01T00:00:00.000005Z"


def test_each_entry_renders_alone_so_any_split_gives_the_same_bytes():
    lines = [Line(i, "warn", f"\x1b[3{i % 8}mline {i}\x1b[0m \u00e9", STAMP + i, i * 1000) for i in range(1, 50)]
    options = TextOptions(strip_ansi=True, timestamps=True, levels=True)
    whole = render(lines, options)
    for cut in (1, 7, 25, 48):
        assert render(lines[:cut], options) + render(lines[cut:], options) == whole


def test_marks_find_the_last_known_point_before_an_offset():
    marks = Marks()
    assert marks.before(10) == (0, 0)
    marks.add(100, 5000)
    marks.add(200, 9000)
    marks.add(100, 5000)          # twice: kept once
    assert marks.before(4999) == (0, 0)
    assert marks.before(5000) == (100, 5000)
    assert marks.before(8999) == (100, 5000)
    assert marks.before(10**9) == (200, 9000)
    assert marks.at_seq(150) == (100, 5000)
    assert marks.at_seq(200) == (200, 9000)


def test_marks_stay_bounded_and_keep_the_newest():
    marks = Marks()
    for i in range(1, 3 * log_text.MAX_MARKS):
        marks.add(i, i * 10)
    assert len(marks.seqs) <= log_text.MAX_MARKS + 1
    assert marks.seqs[0] == 0 and marks.seqs[-1] == 3 * log_text.MAX_MARKS - 1
    assert all(o == s * 10 for s, o in zip(marks.seqs, marks.offsets, strict=True))


@pytest.mark.parametrize(("header", "parsed"), [
    ("bytes=0-9", (0, 9)), ("bytes=10-", (10, None)), ("bytes=-5", (None, 5)), ("bytes = 3 - 4", (3, 4)),
    ("bytes=5-2", None), ("bytes=0-1,4-5", None), ("lines=1-2", None), ("bytes=-", None), ("bytes=a-b", None),
])
def test_range_headers(header, parsed):
    assert parse_range(header) == parsed


@pytest.mark.parametrize(("wanted", "length", "selected"), [
    ((0, 9), 100, (0, 9)), ((90, 200), 100, (90, 99)), ((10, None), 100, (10, 99)),
    ((None, 5), 100, (95, 99)), ((None, 500), 100, (0, 99)),
    ((100, None), 100, None), ((None, 0), 100, None), ((None, 5), 0, None), ((0, None), 0, None),
])
def test_ranges_resolve_against_the_length(wanted, length, selected):
    assert resolve(wanted, length) == selected


@pytest.mark.parametrize(("header", "gzip"), [
    ("gzip", True), ("deflate, gzip;q=0.5", True), ("br, GZIP", True), ("gzip;q=0", False),
    ("gzip; q=0.0", False), ("identity", False), ("", False), ("x-gzip", True), ("gzip;q=bogus", False),
])
def test_accept_encoding(header, gzip):
    assert accepts_gzip(header) is gzip


def test_query_options():
    assert options_of(b"") == (TextOptions(), False)
    assert options_of(b"ansi=strip&timestamps=true&levels=1&download=1&other=x") == (
        TextOptions(strip_ansi=True, timestamps=True, levels=True), True)
    with pytest.raises(InvalidArgument) as caught:
        options_of(b"ansi=none&timestamps=sometimes")
    assert [v.field for v in caught.value.violations] == ["ansi", "timestamps"]
