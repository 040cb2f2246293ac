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
    nvalues x (u16 length, utf-8 name)               the filter values it holds
    count x (i64 seq, f64 time, u16 value index, u32 wire length)
    the wires, concatenated

Chunks are cut at CHUNK_BYTES of wire bytes (one stream message's budget,
RESPONSE_BYTES) or CHUNK_RECORDS records, whichever comes first. Every chunk
comes with a ChunkMeta: every column of its archive_chunks row, the offset in
the object assigned as the frames are laid end to end, the crc32 of the
stored (compressed) bytes, and the values it holds with their counts (filters
skip chunks; filtered tails count from the end).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import zstandard

from server.domain.limits import RESPONSE_BYTES
from server.live.records import Entry

MAGIC = b"BPC1"
CHUNK_BYTES = RESPONSE_BYTES     # wire bytes per chunk, at most (a record alone may exceed it)
CHUNK_RECORDS = 16384            # records per chunk, at most (bounds the work of decoding one)
# zstd level, measured by bench/archive.py on realistic build output
# (docs/lifecycle.md#the-chunk-format): level 3 (zstd's default) compresses as
# well as levels up to 9 within a few percent at several times their speed.
LEVEL = 3

_HEAD = struct.Struct("<4sIH")
_NAME = struct.Struct("<H")
_RECORD = struct.Struct("<qdHI")
MAX_VALUES = 0xFFFF


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
        if self._last_seq is not None and entry.seq <= self._last_seq:
            raise ValueError(f"records must come in increasing seq order: {entry.seq} after {self._last_seq}")
        self._last_seq = entry.seq
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
        """Every chunk of `entries` and of what was added before."""
        for entry in entries:
            done = self.add(entry)
            if done is not None:
                yield done
        done = self.finish()
        if done is not None:
            yield done

    def _flush(self) -> tuple[bytes, ChunkMeta]:
        records = self._pending
        self._pending, self._pending_bytes = [], 0
        index: dict[str, int] = {}
        counts: list[int] = []
        for entry in records:
            at = index.setdefault(entry.value, len(index))
            if at == len(counts):
                counts.append(0)
            counts[at] += 1
        if len(index) > MAX_VALUES:
            raise ValueError(f"a chunk may hold at most {MAX_VALUES} distinct values, not {len(index)}")
        names = [name.encode() for name in index]
        wires = [entry.wire for entry in records]
        pack = _RECORD.pack
        payload = b"".join([
            _HEAD.pack(MAGIC, len(records), len(names)),
            *(_NAME.pack(len(name)) + name for name in names),
            b"".join([pack(e.seq, e.time, index[e.value], len(e.wire)) for e in records]),
            *wires,
        ])
        frame = self._compressor.compress(payload)
        first, last = records[0], records[-1]
        meta = ChunkMeta(
            build_id=self.build_id, kind=self.kind, chunk=self.chunks, object_key=self.object_key,
            byte_offset=self.offset, byte_length=len(frame),
            first_seq=first.seq, last_seq=last.seq, first_time=_when(first.time), last_time=_when(last.time),
            count=len(records), raw_bytes=len(payload), wire_bytes=sum(map(len, wires)), crc32=zlib.crc32(frame),
            value_names=tuple(index), value_counts=tuple(counts),
        )
        self.chunks += 1
        self.offset += len(frame)
        return frame, meta


def decode(frame: bytes | memoryview, meta: ChunkMeta) -> list[Entry]:
    """The records of one chunk, read back from its stored bytes: ChunkCorrupt
    when they fail the crc32 of the index, zstd's content checksum, or do not
    hold what the index says (count, sizes, seq range)."""
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
        return _records(memoryview(payload), meta)
    except (struct.error, IndexError, UnicodeDecodeError) as error:
        raise ChunkCorrupt(meta, f"malformed payload ({error})") from None


def _records(view: memoryview, meta: ChunkMeta) -> list[Entry]:
    magic, count, nvalues = _HEAD.unpack_from(view, 0)
    if magic != MAGIC:
        raise ChunkCorrupt(meta, f"payload starts with {bytes(magic)!r}, not {MAGIC!r}")
    if count != meta.count:
        raise ChunkCorrupt(meta, f"{count} records where the index says {meta.count}")
    at = _HEAD.size
    names = []
    for _ in range(nvalues):
        (length,) = _NAME.unpack_from(view, at)
        at += _NAME.size
        names.append(str(view[at:at + length], "utf-8"))
        at += length
    end = at + count * _RECORD.size
    heads = _RECORD.iter_unpack(view[at:end])
    at = end
    entries = []
    for seq, when, value, length in heads:
        entries.append(Entry(seq, names[value], bytes(view[at:at + length]), when))
        at += length
    if at != len(view):
        raise ChunkCorrupt(meta, f"the records end at byte {at} of a {len(view)}-byte payload")
    if entries[0].seq != meta.first_seq or entries[-1].seq != meta.last_seq:
        raise ChunkCorrupt(meta, f"seqs {entries[0].seq}..{entries[-1].seq} where the index says "
                                 f"{meta.first_seq}..{meta.last_seq}")
    return entries
