"""The chunk codec of the log archive (docs/lifecycle.md#the-chunk-format).

A build's logs (or events) are archived as one object of independent zstd
frames laid end to end, one frame per chunk; a chunk is a byte range of the
object and is read with one ranged GET. A chunk holds records in sequence
order, a record being exactly what the live feed keeps per row
(server.live.records.Entry: seq, the filter value, the wire bytes of the row
as an element of the stream response's repeated field 1, create_time), so an
archived answer is the hot one byte for byte.

Frame payload, before zstd (little endian; zstd adds its content size and
its own xxhash64 content checksum to the frame):

    b"BPC1"
    u32 count, u16 nvalues
    nvalues x (u16 length, utf-8 name)        the filter values it holds
    count x i64 seq delta                     then the record fields, column by column:
    count x i64 time delta                    (seq and the bits of the f64 create_time,
                                               each minus the one before; the first as is)
    count x u16 value index                   (into the names above)
    count x u32 wire length
    the wires, concatenated

The record fields are stored as columns rather than one struct per record
(the design's first draft): each column is one array conversion in C on
both sides instead of a Python call per record, which made encoding 1.5x
and decoding 2x faster here. Sequences and times are delta-coded (times as
the integer bits of the float, so every float comes back exact): the
columns then cost 10% of the stored size instead of 14%
(docs/lifecycle.md#the-chunk-format).

Chunks are cut at CHUNK_BYTES of wire bytes (one stream message's budget,
RESPONSE_BYTES) or CHUNK_RECORDS records, whichever comes first. Every chunk
comes with a ChunkMeta: every column of its archive_chunks row, the offset in
the object assigned as the frames are laid end to end, the crc32 of the
stored (compressed) bytes, and the values it holds with their counts (filters
skip chunks; filtered tails count from the end).
"""

from __future__ import annotations

import operator
import struct
import sys
import zlib
from array import array
from bisect import bisect_right
from collections import Counter
from collections.abc import AsyncIterator, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from functools import partial
from itertools import accumulate, chain, pairwise
from typing import Any

import zstandard

from server.archive.objects import STREAM_PIECE_BYTES, ObjectStore
from server.domain.limits import RESPONSE_BYTES
from server.live.records import Entry

MAGIC = b"BPC1"
CHUNK_BYTES = RESPONSE_BYTES     # wire bytes per chunk, at most (a record alone may exceed it)
CHUNK_RECORDS = 16384            # records per chunk, at most (bounds the work of decoding one)
# zstd level, measured by bench/archive.py on realistic build output
# (docs/lifecycle.md#why-zstd-level-3): level 1 stores 13% more than level 3
# (zstd's default) at about twice its speed; levels 6 and 9 save 5-8% more at
# 0.6 and 0.4 of its speed.
LEVEL = 3

_HEAD = struct.Struct("<4sIH")
_NAME = struct.Struct("<H")
MAX_VALUES = 0xFFFF
_BIG_ENDIAN = sys.byteorder == "big"


def _column(typecode: str, values: Iterable[Any]) -> bytes:
    column = array(typecode, values)
    if _BIG_ENDIAN:
        column.byteswap()
    return column.tobytes()


def _deltas(values: Sequence[int]) -> Iterator[int]:
    """values[0], then each value minus the one before (accumulate undoes it)."""
    return chain(values[:1], map(operator.sub, values[1:], values[:-1]))


def _read_column(typecode: str, data: memoryview) -> array[Any]:
    column = array(typecode)
    column.frombytes(data)
    if _BIG_ENDIAN:
        column.byteswap()
    return column


class ChunkCorrupt(Exception):
    """A chunk whose stored bytes fail their crc32, zstd's checksum or the
    format: the reader answers DATA_LOSS naming the build and chunk."""

    def __init__(self, meta: ChunkMeta, detail: str) -> None:
        super().__init__(
            f"archived chunk {meta.chunk} of build {meta.build_id!r} ({meta.kind}s, object {meta.object_key!r}, "
            f"bytes {meta.byte_offset}..{meta.byte_offset + meta.byte_length}) is corrupt: {detail}"
        )
        self.meta = meta
        self.detail = detail


@dataclass(frozen=True, slots=True)
class ChunkMeta:
    """One archive_chunks row (its columns, in order)."""

    build_id: str
    kind: str                   # 'log' | 'event'
    chunk: int                  # 0, 1, 2, ... in sequence order
    object_key: str
    byte_offset: int            # where the frame starts in the object
    byte_length: int            # compressed bytes of the frame
    first_seq: int
    last_seq: int
    first_time: datetime
    last_time: datetime
    count: int
    raw_bytes: int              # the frame's payload, uncompressed
    wire_bytes: int             # sum of the records' wire sizes
    crc32: int                  # zlib.crc32 of the frame (the stored bytes)
    value_names: tuple[str, ...]
    value_counts: tuple[int, ...]

    def row(self) -> dict[str, Any]:
        """The archive_chunks row (value_names and value_counts as lists)."""
        values = asdict(self)
        values["value_names"] = list(self.value_names)
        values["value_counts"] = list(self.value_counts)
        return values

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> ChunkMeta:
        """From an archive_chunks row read back (arrays as lists)."""
        return cls(**{name: row[name] for name in cls.__dataclass_fields__} | {
            "value_names": tuple(row["value_names"]), "value_counts": tuple(row["value_counts"])})

    @property
    def byte_end(self) -> int:
        return self.byte_offset + self.byte_length


def _when(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


class Encoder:
    """Records of one build and kind, in sequence order, into frames.

        encoder = Encoder(build_id, "log", key)
        for entry in entries:
            if (done := encoder.add(entry)) is not None:
                frame, meta = done
        if (done := encoder.finish()) is not None: ...

    One zstd compressor serves every chunk of the encoder. Frames are laid
    end to end from byte 0 of the object: each ChunkMeta's byte_offset is
    the sum of the byte_lengths before it.
    """

    def __init__(self, build_id: str, kind: str, object_key: str, *, level: int = LEVEL,
                 chunk_bytes: int = CHUNK_BYTES, chunk_records: int = CHUNK_RECORDS) -> None:
        self.build_id, self.kind, self.object_key = build_id, kind, object_key
        self.chunk_bytes, self.chunk_records = chunk_bytes, chunk_records
        self._compressor = zstandard.ZstdCompressor(level=level, write_checksum=True, write_content_size=True)
        self._pending: list[Entry] = []
        self._pending_bytes = 0
        self._last_seq: int | None = None
        self.chunks = 0          # chunks made so far
        self.offset = 0          # bytes of the object so far

    def add(self, entry: Entry) -> tuple[bytes, ChunkMeta] | None:
        """Take one record; returns the chunk this record closed (the records
        before it), if any."""
        done = None
        size = len(entry.wire)
        if self._pending and (self._pending_bytes + size > self.chunk_bytes or len(self._pending) >= self.chunk_records):
            done = self._flush()
        self._pending.append(entry)
        self._pending_bytes += size
        return done

    def finish(self) -> tuple[bytes, ChunkMeta] | None:
        """The last chunk (the records not yet in one), if any."""
        return self._flush() if self._pending else None

    def encode(self, entries: Iterable[Entry]) -> Iterator[tuple[bytes, ChunkMeta]]:
        """Every chunk of `entries` and of what was added before (add's loop,
        with its state in locals: the per-record cost of encoding)."""
        pending, size = self._pending, self._pending_bytes
        limit, records = self.chunk_bytes, self.chunk_records
        for entry in entries:
            length = len(entry[2])
            if pending and (size + length > limit or len(pending) >= records):
                self._pending_bytes = size
                yield self._flush()
                pending, size = self._pending, 0
            pending.append(entry)
            size += length
        self._pending_bytes = size
        done = self.finish()
        if done is not None:
            yield done

    def _flush(self) -> tuple[bytes, ChunkMeta]:
        records = self._pending
        wire_bytes = self._pending_bytes
        self._pending, self._pending_bytes = [], 0
        seqs, values, wires, times = zip(*records, strict=True)
        first_seq = seqs[0]
        if (self._last_seq is not None and first_seq <= self._last_seq) or not all(map(operator.lt, seqs, seqs[1:])):
            raise ValueError(f"records must come in increasing seq order (chunk {self.chunks} of build {self.build_id!r})")
        self._last_seq = seqs[-1]
        if min(times) < 0:
            raise ValueError(f"a record of build {self.build_id!r} has a create_time before 1970")
        counts = Counter(values)
        if len(counts) > MAX_VALUES:
            raise ValueError(f"a chunk may hold at most {MAX_VALUES} distinct values, not {len(counts)}")
        index = {name: at for at, name in enumerate(counts)}
        lengths = _column("I", map(len, wires))
        payload = b"".join([
            _HEAD.pack(MAGIC, len(records), len(index)),
            *(_NAME.pack(len(name)) + name for name in map(str.encode, index)),
            _column("q", _deltas(seqs)), _column("q", _deltas(array("q", array("d", times).tobytes()))),
            _column("H", map(index.__getitem__, values)), lengths,
            *wires,
        ])
        frame = self._compressor.compress(payload)
        meta = ChunkMeta(
            build_id=self.build_id, kind=self.kind, chunk=self.chunks, object_key=self.object_key,
            byte_offset=self.offset, byte_length=len(frame),
            first_seq=first_seq, last_seq=seqs[-1], first_time=_when(times[0]), last_time=_when(times[-1]),
            count=len(records), raw_bytes=len(payload), wire_bytes=wire_bytes, crc32=zlib.crc32(frame),
            value_names=tuple(index), value_counts=tuple(counts.values()),
        )
        self.chunks += 1
        self.offset += len(frame)
        return frame, meta


async def read_frames(store: ObjectStore, metas: Sequence[ChunkMeta], *, timeout: float) -> AsyncIterator[tuple[bytes, ChunkMeta]]:
    """The stored bytes of consecutive chunks of one object, each with its
    meta, in order: one streamed ranged GET for all of them (a catch-up pays
    one request's latency, not one per chunk), holding about one frame and
    one piece of the stream at a time. `timeout` bounds the request and each
    piece. ObjectMissing / ArchiveUnavailable as ObjectStore.stream; the
    frames are not verified here (decode does that)."""
    if not metas:
        return
    key = metas[0].object_key
    for before, after in pairwise(metas):
        if after.object_key != key or after.byte_offset != before.byte_end:
            raise ValueError(f"chunks {before.chunk} and {after.chunk} are not consecutive in one object")
    pending = bytearray()
    at = 0
    async for piece in store.stream(key, metas[0].byte_offset, metas[-1].byte_end, timeout=timeout,
                                    piece_bytes=min(STREAM_PIECE_BYTES, max(64 * 1024, metas[0].byte_length))):
        pending += piece
        while at < len(metas) and len(pending) >= metas[at].byte_length:
            length = metas[at].byte_length
            frame = bytes(pending[:length])
            del pending[:length]
            yield frame, metas[at]
            at += 1


def decode(frame: bytes | memoryview, meta: ChunkMeta, *, after: int | None = None, upto: int | None = None,
           values: Collection[str] | None = None) -> list[Entry]:
    """The records of one chunk, read back from its stored bytes: ChunkCorrupt
    when they fail the crc32 of the index, zstd's content checksum, or do not
    hold what the index says (count, sizes, seq range).

    With `after` / `upto`, only the records with after < seq <= upto; with
    `values`, only those whose value is one of them. The whole frame is still
    verified; only the records asked for are made into Entries (a tail of 10
    lines makes 10, not a chunk's thousands)."""
    if len(frame) != meta.byte_length:
        raise ChunkCorrupt(meta, f"{len(frame)} bytes where the index says {meta.byte_length}")
    crc = zlib.crc32(frame)
    if crc != meta.crc32:
        raise ChunkCorrupt(meta, f"crc32 {crc:08x} where the index says {meta.crc32:08x}")
    try:
        payload = zstandard.ZstdDecompressor().decompress(frame, max_output_size=meta.raw_bytes)
    except zstandard.ZstdError as error:
        raise ChunkCorrupt(meta, f"zstd: {error}") from None
    if len(payload) != meta.raw_bytes:
        raise ChunkCorrupt(meta, f"{len(payload)} uncompressed bytes where the index says {meta.raw_bytes}")
    try:
        return _records(payload, meta, after, upto, values)
    except (struct.error, IndexError, ValueError) as error:
        raise ChunkCorrupt(meta, f"malformed payload ({error})") from None


_new_entry = partial(tuple.__new__, Entry)


def _records(payload: bytes, meta: ChunkMeta, after: int | None, upto: int | None,
             wanted: Collection[str] | None) -> list[Entry]:
    view = memoryview(payload)
    magic, count, nvalues = _HEAD.unpack_from(view, 0)
    if magic != MAGIC:
        raise ChunkCorrupt(meta, f"payload starts with {bytes(magic)!r}, not {MAGIC!r}")
    if count != meta.count or count == 0:
        raise ChunkCorrupt(meta, f"{count} records where the index says {meta.count}")
    at = _HEAD.size
    names = []
    for _ in range(nvalues):
        (length,) = _NAME.unpack_from(view, at)
        at += _NAME.size
        names.append(str(view[at:at + length], "utf-8"))
        at += length
    seqs = array("q", accumulate(_read_column("q", view[at:at + 8 * count])))
    at += 8 * count
    times = array("d", array("q", accumulate(_read_column("q", view[at:at + 8 * count]))).tobytes())
    at += 8 * count
    values = _read_column("H", view[at:at + 2 * count])
    at += 2 * count
    lengths = _read_column("I", view[at:at + 4 * count])
    at += 4 * count
    ends = list(accumulate(lengths, initial=at))
    if ends[-1] != len(payload) or len(seqs) != count or len(lengths) != count:
        raise ChunkCorrupt(meta, f"the records end at byte {ends[-1]} of a {len(payload)}-byte payload")
    if seqs[0] != meta.first_seq or seqs[-1] != meta.last_seq:
        raise ChunkCorrupt(meta, f"seqs {seqs[0]}..{seqs[-1]} where the index says {meta.first_seq}..{meta.last_seq}")
    if max(values) >= len(names):
        raise ChunkCorrupt(meta, f"a record names value {max(values)} of {len(names)}")
    low = 0 if after is None else bisect_right(seqs, after)
    high = count if upto is None else bisect_right(seqs, upto)
    if wanted is None:
        if low == 0 and high == count:
            wires = map(payload.__getitem__, map(slice, ends, ends[1:]))
            return list(map(_new_entry, zip(seqs, map(names.__getitem__, values), wires, times, strict=True)))
        picked: Iterable[int] = range(low, high)
    else:
        keep = [name in wanted for name in names]
        picked = [at for at in range(low, high) if keep[values[at]]]
    return [_new_entry((seqs[at], names[values[at]], payload[ends[at]:ends[at + 1]], times[at])) for at in picked]
