"""Searching one build's log: `Query` (what to find) and `scan` (where).

A query is a literal string or an RE2 regular expression, compiled once per
call. RE2 runs in time linear in the text (no backtracking: `(a+)+$` on a
long line costs what `a+` costs), so no pattern can pin a core; its pattern
is bounded in length (MAX_QUERY_BYTES) and in compiled size (MAX_PROGRAM,
MAX_MEMORY), and every text it runs on is one line (at most 64 KiB).

`scan` reads the build's lines through the tier-aware reader
(server.live.tiers.Source: hot rows in pages, archived chunks one at a
time; never the whole log) from a cursor up to the last line committed when
the search began, and gives the hits message by message: matches with the
byte offsets of their spans in the message, and context lines around them,
each line once and in order. A message's cursor promises that every hit up
to it has been given, so a search resumed from it gives the rest exactly
once (a resumed search with context looks back at the 2 * context lines
before the cursor to know which of them were sent, and which are still owed
as context). Because both tiers give the same entries (the same wire bytes),
a search answers the same hot and archived.

The literal, case-sensitive search tests each entry's raw wire bytes before
looking at its message (an entry whose bytes lack the needle cannot match),
so most lines of a rare string's search are never parsed.
"""

from __future__ import annotations

import asyncio
import bisect
import re
import time
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Any

import re2

from server.domain.errors import InvalidArgument, NotFound
from server.live.records import Entry, varint
from server.live.tiers import Row, Source

Spans = list[tuple[int, int]]

MAX_QUERY_BYTES = 1024         # the longest query (UTF-8 bytes)
MAX_PROGRAM = 20_000           # the largest compiled regular expression (RE2 program instructions)
MAX_MEMORY = 8 << 20           # RE2's memory for one compiled expression (its DFA cache included)
MAX_CONTEXT_LINES = 10
DEFAULT_MAX_MATCHES = 1000
MAX_MATCHES = 100_000
MAX_SEARCH_SECONDS = 60.0      # one call's scan, whatever its deadline (it ends with a cursor to resume)
DEADLINE_RESERVE = 0.5         # seconds left before the call's deadline when the scan stops
FLUSH_SECONDS = 0.25           # hits found wait at most this long for their message
# Patterns whose page search (Query.candidates) could miss a line: \A, \z, (?-m).
_WHOLE_TEXT = re.compile(r"\\A|\\z|\(\?[a-zA-Z]*-")
SCAN_PAGE = 2000               # lines per read (and at most RESPONSE_BYTES of them)


class Query:
    """A compiled search: `spans(message)` gives the byte offsets of the
    matches in a line's message (UTF-8), in order, not overlapping."""

    def __init__(self, text: str, *, regex: bool, ignore_case: bool) -> None:
        encoded = text.encode()
        if not encoded:
            raise InvalidArgument.one("query", "is required: the text or regular expression to find")
        if len(encoded) > MAX_QUERY_BYTES:
            raise InvalidArgument.one("query", f"must be at most {MAX_QUERY_BYTES} bytes, got {len(encoded)}")
        if "\x00" in text:
            raise InvalidArgument.one("query", "must not contain NUL (U+0000): no line holds one")
        options = re2.Options()
        options.log_errors = False
        options.max_mem = MAX_MEMORY
        options.literal = not regex
        options.case_sensitive = not ignore_case
        options.never_capture = True
        try:
            compiled = re2.compile(encoded, options)
        except re2.error as error:
            reason = error.args[0].decode(errors="replace") if error.args and isinstance(error.args[0], bytes) \
                else str(error)
            raise InvalidArgument.one(
                "query", f"is not a valid RE2 regular expression ({reason}); docs/streaming.md#search"
            ) from None
        if compiled.programsize > MAX_PROGRAM:
            raise InvalidArgument.one(
                "query", f"compiles to {compiled.programsize} RE2 instructions, more than {MAX_PROGRAM}: "
                "use smaller counted repetitions ({n}) or fewer alternatives",
            )
        self._compiled = compiled
        # The lines a page's scan tests one by one are those a search of the
        # whole page (its messages joined by newlines: one call into RE2, or
        # bytes.find for a literal) says may match. In multi-line mode a
        # line's match is a match in the page (^ and $ match at the line's
        # ends, \b sees a newline as a text edge does), so no matching line
        # is missed; a match the page's newlines make is tested and dropped.
        # \A, \z and a flag group turning multi-line off would not carry
        # over: such a pattern tests every line.
        self.needle: bytes | None = encoded if not regex and not ignore_case else None
        self._page: Any = compiled
        if regex:
            self._page = None if _WHOLE_TEXT.search(text) else re2.compile(b"(?m)" + encoded, options)

    def spans(self, message: bytes) -> list[tuple[int, int]]:
        return [match.span() for match in self._compiled.finditer(message)]

    def candidates(self, messages: Sequence[bytes]) -> Sequence[int]:
        """The indices of the messages that may match, in order."""
        if self._page is None or len(messages) < 2:
            return range(len(messages))
        blob = b"\n".join(messages)
        starts = list(accumulate((len(message) + 1 for message in messages[:-1]), initial=0))
        found: list[int] = []
        needle, search = self.needle, self._page.search
        at, end = 0, len(blob)
        while at <= end:
            if needle is not None:
                start = blob.find(needle, at)
                if start < 0:
                    break
            else:
                match = search(blob, at)
                if match is None:
                    break
                start = match.start()
            line = bisect.bisect_right(starts, start) - 1
            found.append(line)
            if line + 1 >= len(messages):
                break
            at = starts[line + 1]
        return found


def _varint_at(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, at
        shift += 7


def message_of(wire: bytes) -> bytes:
    """The message (field 5) of the BuildLog an entry's wire holds (an
    element of a repeated field 1: tag, length, then the BuildLog's fields),
    without parsing the rest of it."""
    _, at = _varint_at(wire, 1)
    end = len(wire)
    while at < end:
        key, at = _varint_at(wire, at)
        number, kind = key >> 3, key & 7
        if kind == 0:
            _, at = _varint_at(wire, at)
        elif kind == 2:
            size, at = _varint_at(wire, at)
            if number == 5:
                return wire[at:at + size]
            at += size
        elif kind == 1:
            at += 8
        elif kind == 5:
            at += 4
        else:   # groups never occur in a BuildLog
            break
        if number > 5:
            break
    return b""   # an empty message is not written


def hit_bytes(seq: int, wire: bytes | None, spans: Sequence[tuple[int, int]] | None) -> bytes:
    """A LogSearchHit as an element of SearchBuildLogsResponse's field 1:
    an entry's wire is already the hit's field 1 (the BuildLog); None
    leaves the line out (omit_lines)."""
    parts = [wire] if wire is not None else []
    parts.append(b"\x10" + varint(seq))
    if spans is None:
        parts.append(b"\x20\x01")
    else:
        for start, end in spans:
            span = (b"\x08" + varint(start) if start else b"") + (b"\x10" + varint(end) if end else b"")
            parts.append(b"\x1a" + varint(len(span)) + span)
    hit = b"".join(parts)
    return b"\x0a" + varint(len(hit)) + hit


@dataclass
class Message:
    """One response's worth: hits (serialized), the cursor after them,
    whether the search is done, and the matches found by the call so far."""

    hits: list[bytes]
    cursor: int
    done: bool
    matches: int


@dataclass
class _State:
    """Where a scan stands between lines: the unsent lines just before (the
    candidates for a next match's before-context), how many lines of
    after-context are still owed, and the matches counted."""

    context: int
    recent: deque[Entry | Row] = field(default_factory=deque)
    owed: int = 0
    matches: int = 0


@dataclass(frozen=True, slots=True)
class Search:
    query: Query
    values: Sequence[str]            # the levels that may match (empty: all)
    context: int
    max_matches: int
    lines: bool                      # send each hit's line (else its sequence and spans)


async def scan(
    source: Source, search: Search, *, after: int, upto: int, budget_bytes: int, deadline: float,
    progress_seconds: float,
) -> AsyncIterator[Message]:
    """The search's messages: after < seq <= upto, cut at budget_bytes of
    hits, a progress message (no hits) when progress_seconds pass without
    one, the last one `done` when upto was reached. It stops early (its last
    message not done) once max_matches were found or at `deadline` (a
    time.monotonic() value)."""
    query, wanted, n = search.query, frozenset(search.values), search.context
    state = _State(n, deque(maxlen=n or 1))
    # With context, every line is read (context lines may be of any level);
    # without, the reader skips what the level filter excludes (whole chunks
    # of the archive).
    read_values: Sequence[str] = () if n else search.values
    if n and after > 0:
        await _replay(source, search, state, after, wanted)
    hits: list[bytes] = []
    size = 0
    cursor = after
    last_sent = time.monotonic()
    limit_hit = False   # max_matches were found: only the last one's after-context is left to send
    stopped = False
    while cursor < upto and not stopped and time.monotonic() < deadline:
        items, more = await source.read_lines(
            cursor, upto, values=read_values, limit=SCAN_PAGE, max_bytes=budget_bytes
        )
        if source.gone:
            raise NotFound("build", source.build_id, field="build_id")   # deleted while searched
        previous = cursor   # every hit up to it is in `hits` already
        messages = [_message(item) for item in items]
        candidates = query.candidates(messages)
        # Without context only the candidates matter; with it, every line
        # (it may be context, or wait as a candidate for a match's before-context).
        order: Sequence[int] = range(len(items)) if n else candidates
        maybe = set(candidates) if n and len(candidates) < len(items) else None
        sent: list[tuple[Entry | Row, Spans | None]] = []   # this page's hits, in order
        for index in order:
            item = items[index]
            spans: Spans | None = None
            if (maybe is None or index in maybe) and (not wanted or item.value in wanted):
                spans = query.spans(messages[index]) or None
            if limit_hit:
                # After the last match allowed: its after-context, up to the next match.
                if state.owed == 0 or spans is not None:
                    stopped = True
                    break
                state.owed -= 1
                sent.append((item, None))
            else:
                _step(state, item, spans, sent)
                limit_hit = spans is not None and state.matches >= search.max_matches
            cursor = item.seq
        if sent:
            if search.lines:
                entries = await source.entries([item for item, _ in sent])
                page = [hit_bytes(item.seq, entries[item.seq].wire, spans) for item, spans in sent]
            else:   # sequences and spans only: no line is read whole
                page = [hit_bytes(item.seq, None, spans) for item, spans in sent]
            page_size = sum(map(len, page))
            if hits and size + page_size > budget_bytes:
                # A message holds one page's hits at least, and never more than the budget besides.
                yield Message(hits, previous, False, state.matches)
                hits, size, last_sent = [], 0, time.monotonic()
            hits += page
            size += page_size
        if not stopped:
            if items:
                cursor = items[-1].seq
            if not more:
                cursor = upto   # every line up to upto was read (the filter's skipped lines too)
        waited = time.monotonic() - last_sent
        if stopped or (limit_hit and state.owed == 0):
            break
        if size >= budget_bytes or (hits and waited >= FLUSH_SECONDS) or waited >= progress_seconds:
            # Hits found so far reach the caller soon (a count streams in);
            # with none, progress keeps proxies from cutting an idle stream.
            yield Message(hits, cursor, False, state.matches)
            hits, size, last_sent = [], 0, time.monotonic()
        await asyncio.sleep(0)   # other calls run between reads
    yield Message(hits, cursor, cursor >= upto, state.matches)


def _message(item: Entry | Row) -> bytes:
    return item.message.encode() if isinstance(item, Row) else message_of(item.wire)


def _step(state: _State, item: Entry | Row, spans: Spans | None, sent: list[tuple[Entry | Row, Spans | None]]) -> None:
    """One line through the scan: the hits it sends go to `sent` (its
    before-context first, when it matches); a line that sends nothing is
    kept as a candidate for the next match's before-context."""
    n = state.context
    if spans is not None:
        sent.extend((before, None) for before in state.recent if before.seq >= item.seq - n)
        state.recent.clear()
        sent.append((item, spans))
        state.owed = n
        state.matches += 1
    elif state.owed > 0:
        state.owed -= 1
        sent.append((item, None))
    elif n:
        state.recent.append(item)


async def _replay(source: Source, search: Search, state: _State, after: int, wanted: frozenset[str]) -> None:
    """The state a scan that sent every hit up to `after` had there: the
    lines (after - 2n, after] decide it (which of them were sent as
    matches or context, how much after-context is still owed)."""
    n = state.context
    items, _ = await source.read_lines(max(0, after - 2 * n), after, values=(), limit=2 * n, max_bytes=1 << 30)
    ignored: list[tuple[Entry | Row, Spans | None]] = []
    for item in items:
        matches = not wanted or item.value in wanted
        _step(state, item, (search.query.spans(_message(item)) or None) if matches else None, ignored)
    state.matches = 0
