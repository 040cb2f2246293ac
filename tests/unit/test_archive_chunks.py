"""The archive's chunk codec (server.archive.chunks): what goes in comes out,
byte for byte; chunks are cut where the format says; damage is detected."""

from __future__ import annotations

import itertools
import zlib
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from bench.archive import log_entries
from server.archive.chunks import CHUNK_BYTES, MAGIC, ChunkCorrupt, ChunkMeta, Encoder, decode
from server.live.records import Entry, log_entry

BUILD = "c" + "9" * 24


def encode(entries: list[Entry], **kwargs: int) -> list[tuple[bytes, ChunkMeta]]:
    return list(Encoder(BUILD, "log", f"builds/{BUILD}/logs-a.bpc", **kwargs).encode(entries))


def test_realistic_output_round_trips_byte_for_byte_with_an_exact_index():
    entries = list(log_entries(BUILD, 30_000, seed=7))
    chunks = encode(entries)
    assert len(chunks) > 2
    decoded = [entry for frame, meta in chunks for entry in decode(frame, meta)]
    assert decoded == entries
    offset = 0
    for number, (frame, meta) in enumerate(chunks):
        records = decode(frame, meta)
        assert (meta.build_id, meta.kind, meta.chunk, meta.object_key) == (BUILD, "log", number, f"builds/{BUILD}/logs-a.bpc")
        assert (meta.byte_offset, meta.byte_length, meta.crc32) == (offset, len(frame), zlib.crc32(frame))
        assert (meta.first_seq, meta.last_seq, meta.count) == (records[0].seq, records[-1].seq, len(records))
        assert meta.first_time == datetime.fromtimestamp(records[0].time, UTC)
        assert meta.last_time == datetime.fromtimestamp(records[-1].time, UTC)
        assert meta.wire_bytes == sum(len(e.wire) for e in records) <= CHUNK_BYTES
        assert dict(zip(meta.value_names, meta.value_counts, strict=True)) == {
            level: sum(e.value == level for e in records) for level in {e.value for e in records}}
        assert frame[:4] == b"\x28\xb5\x2f\xfd"   # a zstd frame
        offset += len(frame)
    # Consecutive chunks cover consecutive seqs, and every chunk but the last is full.
    assert all(a[1].last_seq + 1 == b[1].first_seq for a, b in itertools.pairwise(chunks))
    assert all(meta.wire_bytes + 400 > CHUNK_BYTES for _, meta in chunks[:-1])


def test_the_index_row_round_trips_through_its_columns():
    frame, meta = encode(list(log_entries(BUILD, 50)))[0]
    row = meta.row()
    assert isinstance(row["value_names"], list) and row["chunk"] == 0
    assert ChunkMeta.from_row(row) == meta
    assert decode(frame, ChunkMeta.from_row(row)) == list(log_entries(BUILD, 50))


def test_chunks_are_cut_by_bytes_and_by_records():
    entries = [Entry(seq, "info", b"x" * 100, 1.5 + seq) for seq in range(1, 1001)]
    by_bytes = encode(entries, chunk_bytes=1000)
    assert [meta.count for _, meta in by_bytes] == [10] * 100
    by_records = encode(entries, chunk_records=64)
    assert [meta.count for _, meta in by_records] == [64] * 15 + [40]
    assert [meta.first_seq for _, meta in by_records][:3] == [1, 65, 129]
    one = encode([Entry(5, "warn", b"y" * 5000, 2.0)], chunk_bytes=1000)
    assert [meta.count for _, meta in one] == [1]   # a record bigger than a chunk is a chunk of its own


def test_add_and_finish_make_the_same_chunks_as_encode():
    entries = list(log_entries(BUILD, 3000, seed=3))
    encoder = Encoder(BUILD, "log", "k", chunk_bytes=64 * 1024)
    made = [done for entry in entries if (done := encoder.add(entry)) is not None]
    last = encoder.finish()
    assert last is not None and encoder.finish() is None
    assert [*made, last] == list(Encoder(BUILD, "log", "k", chunk_bytes=64 * 1024).encode(entries))


def test_records_out_of_order_are_refused():
    with pytest.raises(ValueError, match="increasing seq order"):
        encode([Entry(2, "info", b"a", 1.0), Entry(2, "info", b"b", 1.0)])
    encoder = Encoder(BUILD, "log", "k", chunk_records=1)
    list(encoder.encode([Entry(5, "info", b"a", 1.0)]))
    with pytest.raises(ValueError, match="increasing seq order"):
        list(encoder.encode([Entry(4, "info", b"b", 1.0)]))


def test_unicode_values_messages_and_a_64_kib_line_survive():
    when = datetime(2026, 12, 7, 5, 0, 0, 123456, tzinfo=UTC)
    rows = [
        {"level": "info", "message": "构建成功 ✓ — テスト 🚀 \x1b[1;32mok\x1b[0m", "metadata": {"步骤": "编译", "emoji": "📦"}},
        {"level": "error", "message": "é" * 32768, "metadata": {}},      # 64 KiB of UTF-8
        {"level": "tool", "message": "", "metadata": {}},
        {"level": "warn", "message": "\x00\x01 binary-ish \udcff".encode("utf-8", "surrogatepass").decode("utf-8", "replace"), "metadata": {}},
    ]
    entries = [log_entry({"id": 100 + n, "build_id": BUILD, "seq": n + 1, "create_time": when, **row})
               for n, row in enumerate(rows)]
    assert len(entries[1].wire) > 65536
    # Event types are free text: unicode filter values too.
    events = [Entry(1, "déploiement.terminé", b"\x0a\x01z", 3.25), Entry(2, "ビルド", b"\x0a\x00", 3.5)]
    for records in (entries, events):
        ((frame, meta),) = encode(records)
        assert decode(frame, meta) == records
    ((_, meta),) = encode(events)
    assert meta.value_names == ("déploiement.terminé", "ビルド")
    ((frame, meta),) = encode(entries)
    assert decode(frame, meta)[0].time == when.timestamp()


def test_a_flipped_bit_a_truncated_frame_and_a_lying_index_are_corruption_naming_build_and_chunk():
    chunks = encode(list(log_entries(BUILD, 20_000, seed=5)))
    frame, meta = chunks[1]
    flipped = bytearray(frame)
    flipped[len(frame) // 2] ^= 0x10
    with pytest.raises(ChunkCorrupt, match=rf"chunk 1 of build '{BUILD}'.*crc32") as caught:
        decode(bytes(flipped), meta)
    assert caught.value.meta == meta
    with pytest.raises(ChunkCorrupt, match="bytes where the index says"):
        decode(frame[:-10], meta)
    # The crc32 matches damaged bytes (the index was written from them): zstd's own checksum catches it.
    with pytest.raises(ChunkCorrupt, match="zstd"):
        decode(bytes(flipped), replace(meta, crc32=zlib.crc32(bytes(flipped))))
    # Another chunk's bytes under this chunk's index.
    other, other_meta = chunks[0]
    with pytest.raises(ChunkCorrupt, match="chunk 1"):
        decode(other, replace(meta, byte_length=len(other), crc32=zlib.crc32(other)))
    # A frame that is intact but holds other records than the index says.
    with pytest.raises(ChunkCorrupt, match="records where the index says"):
        decode(other, replace(other_meta, count=other_meta.count + 1))
    with pytest.raises(ChunkCorrupt, match="seqs"):
        decode(other, replace(other_meta, first_seq=other_meta.first_seq + 1))


def test_a_frame_that_is_not_ours_is_corruption():
    import zstandard

    frame = zstandard.ZstdCompressor(write_checksum=True).compress(b"BPC2" + b"\0" * 40)
    meta = ChunkMeta(BUILD, "log", 0, "k", 0, len(frame), 1, 1, datetime.now(UTC), datetime.now(UTC), 1, 44, 0,
                     zlib.crc32(frame), ("info",), (1,))
    with pytest.raises(ChunkCorrupt, match=f"not {MAGIC!r}"):
        decode(frame, meta)


def test_decode_can_make_only_the_records_asked_for():
    entries = list(log_entries(BUILD, 6000, seed=11))
    ((frame, meta),) = encode(entries, chunk_bytes=1 << 30, chunk_records=10_000)
    first, last = meta.first_seq, meta.last_seq
    assert decode(frame, meta, after=last - 10) == entries[-10:]                       # a tail
    assert decode(frame, meta, after=100, upto=250) == entries[100:250]
    assert decode(frame, meta, after=first - 1, upto=last) == entries
    assert decode(frame, meta, after=last) == [] and decode(frame, meta, upto=first - 1) == []
    errors = [e for e in entries if e.value == "error"]
    assert errors and decode(frame, meta, values={"error"}) == errors
    assert decode(frame, meta, after=3000, values={"error", "warn"}) == [
        e for e in entries[3000:] if e.value in ("error", "warn")]
    assert decode(frame, meta, values={"no-such-level"}) == []
    # The whole frame is verified even when few records are asked for.
    damaged = bytearray(frame)
    damaged[-40] ^= 1
    with pytest.raises(ChunkCorrupt, match="crc32"):
        decode(bytes(damaged), meta, after=last - 1)


def test_any_time_comes_back_exactly_and_a_time_before_1970_is_refused():
    import random

    rng = random.Random(3)
    times = [0.0, 1e-300, 0.1, 1.7976931348623157e308, *(rng.uniform(0, 4e9) for _ in range(500))]
    entries = [Entry(seq, "info", b"w", when) for seq, when in enumerate(times, start=1)]
    ((frame, meta),) = encode(entries)
    assert [e.time for e in decode(frame, meta)] == times
    with pytest.raises(ValueError, match="before 1970"):
        encode([Entry(1, "info", b"w", 5.0), Entry(2, "info", b"w", -1.0)])
