"""A build's log as plain text: the one rendering, for ReadBuildLogText (gRPC
and Connect) and GET /builds/{id}/logs.txt (server.http.log_download).

The text. One line per entry, in sequence order: an optional prefix, the
message, and "\\n".
- prefix: with `timestamps`, the entry's create_time in RFC 3339, UTC, with
  microseconds, and a space (`2026-12-07T04:34:40.123456Z `); with `levels`,
  its level upper case padded to 5 characters and a space (`INFO  `,
  `ERROR `). Both have a fixed width, so columns line up.
- message: as written, or with its ANSI escape sequences removed
  (`strip_ansi`, below). A message that itself holds line breaks keeps them:
  its entry takes several lines, and the prefix is written once, before the
  first of them (so `grep` for a level finds an entry's first line). A
  message that ends with "\\n" is followed by an empty line. Metadata is not
  part of the text (ListBuildLogs returns it).
Every entry's bytes depend on that entry alone (no state carries from one
to the next), so the text of a hot build, an archived one and a running one
(up to its last committed line) are the same bytes.

Offsets. A read from offset N renders the text from its start and skips N
bytes: a line's length is known only once it is rendered (the stripped
length of a message, its UTF-8 length). To keep that from costing a whole
log per resume, every pass leaves marks: (sequence s, offset o) = "the text
of entries 1..s is o bytes long", one per batch (about 1 MiB of log). Entries
never change once committed, so a mark stays exact for the life of the
build (a running one included), whatever tier its log moves to; a read
starts from the last mark at or before its offset. The marks live in this
process (MARKED_TEXTS texts of at most MAX_MARKS marks each, least recently
used first out): a resume served by another process or replica renders from
the start once, then has its own marks.

Reading. Entries come from the live feed's reader (server.live), in batches
of at most RESPONSE_BYTES, through `_entries`, the one place that knows where
they are read from; nothing holds more than one batch and its rendered text.
"""

from __future__ import annotations

import bisect
import re
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

from buildplatform.v1 import build_log_pb2

from server.core import guard
from server.core.deps import Deps
from server.core.wire import validate_id
from server.domain.access import Principal
from server.domain.errors import InvalidArgument, Unavailable
from server.domain.feeds import logs_expired
from server.domain.limits import RESPONSE_BYTES
from server.domain.status import TERMINAL
from server.domain.validation import EPOCH, Checker
from server.live.reader import Batch
from server.live.records import LEVEL_FROM_PB
from server.store import feeds

CHUNK_BYTES = 256 * 1024   # the most data one ReadBuildLogText response carries
MARKED_TEXTS = 256         # (build, options) whose marks this process keeps
MAX_MARKS = 1024           # marks per text; past it every other one is dropped
HOT_ROWS = 5000            # hot lines read per statement (and at most RESPONSE_BYTES of them)

# --- ANSI escape sequences (ECMA-48) --------------------------------------------------
#
# Each alternative is one kind of sequence, by its introducer (7-bit ESC form
# or the 8-bit C1 character, which in UTF-8 text is a code point U+0080-U+009F):
#   CSI  ESC [ | U+009B   parameter bytes 0x30-0x3F*, intermediate bytes 0x20-0x2F*,
#                         a final byte 0x40-0x7E (SGR colours, cursor moves, erases)
#   OSC  ESC ] | U+009D   a string up to BEL (xterm's terminator) or ST (ESC \ | U+009C)
#                         (window titles, OSC 8 hyperlinks)
#   DCS  ESC P | U+0090, SOS ESC X | U+0098, PM ESC ^ | U+009E, APC ESC _ | U+009F
#                         a string up to ST
#   nF, Fp, Fe, Fs        ESC, intermediate bytes 0x20-0x2F*, a final byte 0x30-0x7E
#                         (ESC ( B charset, ESC 7 save cursor, ESC c reset, ESC M)
# A sequence cut short (the message ends inside it, or a byte that cannot
# belong to it comes) is removed up to where it stops; the byte that stopped
# it is kept. A string sequence also stops at an ESC that begins another one.
_ANSI = re.compile(
    "(?:\x1b\\[|\x9b)[\x30-\x3f]*[\x20-\x2f]*[\x40-\x7e]?"
    "|(?:\x1b\\]|\x9d)[^\x07\x1b\x9c]*(?:\x07|\x1b\\\\|\x9c)?"
    "|(?:\x1b[PX^_]|[\x90\x98\x9e\x9f])[^\x1b\x9c]*(?:\x1b\\\\|\x9c)?"
    "|\x1b[\x20-\x2f]*[\x30-\x7e]?"
)
# Any introducer: a message without one is left as it is, at the cost of one scan.
_INTRODUCER = re.compile("[\x1b\x90\x98\x9b\x9d\x9e\x9f]")


def strip_ansi(text: str) -> str:
    """`text` without its ECMA-48 escape sequences (see _ANSI). Other
    control characters (tab, carriage return, bell outside an OSC) stay."""
    if _INTRODUCER.search(text) is None:
        return text
    return _ANSI.sub("", text)


# --- the rendering ------------------------------------------------------------------------

LEVEL_PREFIX = {"info": "INFO  ", "warn": "WARN  ", "error": "ERROR ", "tool": "TOOL  "}


@dataclass(frozen=True, slots=True)
class TextOptions:
    strip_ansi: bool = False
    timestamps: bool = False
    levels: bool = False


class Line(NamedTuple):
    """What the text shows of one entry."""

    seq: int
    level: str          # info, warn, error, tool
    message: str
    seconds: int        # create_time: seconds since the epoch
    nanos: int          # and nanoseconds (PostgreSQL keeps microseconds)


def timestamp(seconds: int, nanos: int) -> str:
    """RFC 3339, UTC, always with 6 fractional digits: 2026-12-07T04:34:40.123456Z."""
    return f"{datetime.fromtimestamp(seconds, UTC):%Y-%m-%dT%H:%M:%S}.{nanos // 1000:06d}Z"


def render(lines: Iterable[Line], options: TextOptions) -> bytes:
    """The text of these entries (see the module's docstring), UTF-8."""
    strip, stamps, levels = options.strip_ansi, options.timestamps, options.levels
    parts: list[str] = []
    add = parts.append
    for line in lines:
        if stamps:
            add(timestamp(line.seconds, line.nanos))
            add(" ")
        if levels:
            add(LEVEL_PREFIX.get(line.level, line.level.upper().ljust(5) + " "))
        add(strip_ansi(line.message) if strip else line.message)
        add("\n")
    return "".join(parts).encode()


# --- where the entries come from ----------------------------------------------------------


def _line(seq: int, level: str, message: str, create_time: datetime) -> Line:
    delta = create_time - EPOCH   # exact integer arithmetic, as server.wellknown.timestamp
    return Line(seq, level, message, delta.days * 86400 + delta.seconds, delta.microseconds * 1000)


async def _entries(d: Deps, build_id: str, after: int, upto: int) -> AsyncIterator[tuple[list[Line], int]]:
    """The entries in (after, upto] in bounded batches, oldest first, each
    with the cursor after it (upto once every entry up to it was read). The
    one function that knows where entries come from. While the log is hot,
    only the four columns the text shows are read (feeds.scan, the tier
    checked by the same statement); from the first batch that finds it in
    another tier on, the live feed's reader (server.live) reads whichever
    tier holds them, its records parsed once. (Reading hot lines through
    the reader built each one's stream record only to parse it back: three
    quarters of a download's CPU, docs/lifecycle.md#download.)"""
    cursor = after
    while cursor < upto:
        rows, _, tier = await feeds.scan(
            d.db, feeds.LOGS, build_id, cursor, upto, values=(), limit=HOT_ROWS, max_bytes=RESPONSE_BYTES, times=True,
        )
        if tier != "hot" or not rows:
            break
        cursor = rows[-1][0]   # short of upto with nothing more: the next scan finds none, the reader says so
        yield [_line(*row) for row in rows], cursor
    if cursor >= upto:
        return
    async with d.hub.follower(feeds.LOGS, build_id, after=cursor, follow=False) as follower:
        while cursor < upto:
            got = await follower.next_batch(RESPONSE_BYTES)
            if not isinstance(got, Batch):
                break
            logs = build_log_pb2.StreamBuildLogsResponse.FromString(b"".join(got.items)).logs
            lines = [
                Line(log.sequence, LEVEL_FROM_PB.get(log.level, ""), log.message,
                     log.create_time.seconds, log.create_time.nanos)
                for log in logs if log.sequence <= upto
            ]
            cursor = min(got.cursor, upto)
            yield lines, cursor
    if cursor < upto:
        # The reader ended before upto: the log changed under it (not a
        # thing a committed log does); say so rather than answer short.
        raise Unavailable(f"the log of build {build_id!r} ended at {cursor} before {upto}; retry the read")


# --- marks: where a sequence number falls in the text ---------------------------------------


@dataclass(slots=True)
class Marks:
    """Known points of one text: the text of entries 1..seqs[i] is
    offsets[i] bytes long. Both lists increase together (every entry adds at
    least its "\\n"), starting at (0, 0)."""

    seqs: list[int] = field(default_factory=lambda: [0])
    offsets: list[int] = field(default_factory=lambda: [0])

    def before(self, offset: int) -> tuple[int, int]:
        """The last mark at or before `offset`: (seq, its offset)."""
        at = bisect.bisect_right(self.offsets, offset) - 1
        return self.seqs[at], self.offsets[at]

    def at_seq(self, seq: int) -> tuple[int, int]:
        """The last mark at or before sequence `seq`."""
        at = bisect.bisect_right(self.seqs, seq) - 1
        return self.seqs[at], self.offsets[at]

    def add(self, seq: int, offset: int) -> None:
        at = bisect.bisect_left(self.seqs, seq)
        if at < len(self.seqs) and self.seqs[at] == seq:
            return
        self.seqs.insert(at, seq)
        self.offsets.insert(at, offset)
        if len(self.seqs) > MAX_MARKS:
            # Thin out, keeping (0, 0) and the newest.
            keep = [*range(0, len(self.seqs) - 1, 2), len(self.seqs) - 1]
            self.seqs = [self.seqs[i] for i in keep]
            self.offsets = [self.offsets[i] for i in keep]


_marks: OrderedDict[tuple[str, TextOptions], Marks] = OrderedDict()


def marks(build_id: str, options: TextOptions) -> Marks:
    key = (build_id, options)
    found = _marks.get(key)
    if found is None:
        found = _marks[key] = Marks()
        if len(_marks) > MARKED_TEXTS:
            _marks.popitem(last=False)
    else:
        _marks.move_to_end(key)
    return found


# --- a text being read --------------------------------------------------------------------


@dataclass(slots=True)
class LogText:
    """The text of a build's log up to `upto` (its last sequence when the
    read began), written with `options`."""

    d: Deps
    build_id: str
    options: TextOptions
    upto: int
    finished: bool   # the build is in a terminal status: the text is complete
    marks: Marks

    async def _pieces(self, after: int, offset: int) -> AsyncIterator[tuple[int, bytes]]:
        """(offset, rendered batch) from the entry after `after`, whose text
        starts at `offset`, to `upto`; each batch's end is marked."""
        if after >= self.upto:
            return
        async for lines, cursor in _entries(self.d, self.build_id, after, self.upto):
            data = render(lines, self.options)
            yield offset, data
            offset += len(data)
            self.marks.add(cursor, offset)

    def known_length(self) -> int | None:
        """The text's length when the marks already reach upto, else None."""
        seq, offset = self.marks.at_seq(self.upto)
        return offset if seq == self.upto else None

    async def length(self) -> int:
        """The text's length in bytes: from the marks when they reach upto,
        else rendered (and counted) from the last mark."""
        seq, offset = self.marks.at_seq(self.upto)
        async for at, data in self._pieces(seq, offset):
            offset = at + len(data)
        return offset

    async def chunks(self, offset: int, limit: int = 0) -> AsyncIterator[tuple[int, bytes]]:
        """(offset, data) of the text from `offset`, at most `limit` bytes (0:
        to the end), in chunks of CHUNK_BYTES bytes but the last (1 to
        CHUNK_BYTES): where a chunk ends depends on the offset and the text
        alone, not on how the entries were read (hot rows or archived
        chunks). InvalidArgument (read_offset) before anything is yielded
        when `offset` is past the end."""
        end = offset + limit if limit else None
        seq, mark = self.marks.before(offset)
        if seq > self.upto:   # a mark of a later, longer read of a running build
            seq, mark = self.marks.at_seq(self.upto)
        total = mark   # where the text rendered so far ends
        pending = bytearray()   # the text from `offset` not sent yet: less than a chunk between batches
        async for at, data in self._pieces(seq, mark):
            total = at + len(data)
            if total <= offset:
                continue
            piece = memoryview(data)[max(0, offset + len(pending) - at):]
            if end is not None:
                piece = piece[: max(0, end - offset - len(pending))]
            pending += piece
            while len(pending) >= CHUNK_BYTES:
                yield offset, bytes(pending[:CHUNK_BYTES])
                del pending[:CHUNK_BYTES]
                offset += CHUNK_BYTES
            if end is not None and offset + len(pending) >= end:
                break
        if pending:
            yield offset, bytes(pending)
            offset += len(pending)
        if offset > total:
            raise InvalidArgument.one(
                "read_offset", f"is past the end of the text ({total} bytes with these options); "
                f"read from an offset of at most {total}",
            )


async def open_text(d: Deps, principal: Principal, build_id: str, options: TextOptions) -> LogText:
    """The text of `build_id`'s log now, once `principal` may read it:
    PermissionDenied, NotFound, FailedPrecondition LOGS_EXPIRED."""
    await guard.require(d, principal, "build", build_id)
    found = await feeds.position(d.db, feeds.LOGS, build_id)
    if found.tier == "expired":
        raise logs_expired(build_id, found.expire_time)
    return LogText(d, build_id, options, found.last, found.status in TERMINAL, marks(build_id, options))


# --- the RPC --------------------------------------------------------------------------------

_ANSI_MODES = {
    build_log_pb2.ANSI_MODE_UNSPECIFIED: False,
    build_log_pb2.ANSI_MODE_KEEP: False,
    build_log_pb2.ANSI_MODE_STRIP: True,
}


def _request(request: build_log_pb2.ReadBuildLogTextRequest) -> tuple[str, TextOptions, int, int]:
    build_id = validate_id("build_id", request.build_id)
    check = Checker()
    if request.read_offset < 0:
        check.add("read_offset", "must not be negative")
    if request.read_limit < 0:
        check.add("read_limit", "must not be negative (0 reads to the end)")
    strip = _ANSI_MODES.get(request.options.ansi)
    if strip is None:
        check.add("options.ansi", "must be ANSI_MODE_KEEP or ANSI_MODE_STRIP")
    check.done()
    options = TextOptions(bool(strip), request.options.timestamps, request.options.levels)
    return build_id, options, request.read_offset, request.read_limit


def read_build_log_text(
    d: Deps, principal: Principal, request: build_log_pb2.ReadBuildLogTextRequest
) -> AsyncIterator[Any]:
    """ReadBuildLogTextResponse messages: the text from read_offset, in chunks."""
    build_id, options, offset, limit = _request(request)

    async def responses() -> AsyncIterator[Any]:
        text = await open_text(d, principal, build_id, options)
        async for at, data in text.chunks(offset, limit):
            yield build_log_pb2.ReadBuildLogTextResponse(data=data, offset=at)

    return responses()
