"""The archive's object store (server.archive.objects) over the real S3
protocol (moto's ThreadedMotoServer) and over a local directory: what the
archiver, the reader and retention rely on."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import AsyncIterator, Iterator

import pytest

from bench.archive import log_entries
from server.archive.chunks import Encoder, decode, read_frames
from server.archive.objects import (
    PART_BYTES,
    ArchiveUnavailable,
    ObjectMissing,
    ObjectStore,
    attempt_of,
    build_prefix,
    new_attempt,
    object_key,
    open_store,
)
from server.domain.errors import Unavailable
from tests.support import MotoS3, moto_s3

TIMEOUT = 20.0
# How late past its timeout an operation may end on a loaded machine (event
# loop latency): far below what would happen without the bound (the HTTP
# client's 30 s retry budget, its 120 s request timeout, a silent peer's forever).
LATE = 2.0


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path) -> ObjectStore:
    if request.param == "local":
        return open_store(str(tmp_path / "archive"))
    s3: MotoS3 = request.getfixturevalue("s3")
    return open_store(f"s3://{s3.bucket()}/prod/logs", config=s3.config, allow_http=True)


def frames(count: int, size: int, seed: int) -> Iterator[bytes]:
    for n in range(count):
        yield (bytes([seed, n % 256]) * (size // 2))[:size - 8] + os.urandom(8)


async def streamed(parts: list[bytes]) -> AsyncIterator[bytes]:
    for part in parts:
        await asyncio.sleep(0)
        yield part


async def test_a_streamed_multipart_object_reads_back_exactly_by_range(store):
    # More than two S3 parts, from frames of uneven sizes that straddle the part boundaries.
    parts = [os.urandom(size) for size in (300_000, 1, PART_BYTES, 777_777, PART_BYTES + 3, 123)]
    data = b"".join(parts)
    key = object_key("c" + "1" * 24, "log", new_attempt())
    assert await store.put(key, streamed(parts), timeout=TIMEOUT) == len(data)
    for start, end in ((0, 1), (0, 300_000), (300_000, 300_001), (PART_BYTES - 5, PART_BYTES + 5),
                       (len(data) - 123, len(data)), (0, len(data))):
        assert await store.get(key, start, end, timeout=TIMEOUT) == data[start:end]
    pieces = [piece async for piece in store.stream(key, 100, len(data) - 100, timeout=TIMEOUT, piece_bytes=1 << 20)]
    assert b"".join(pieces) == data[100:-100]
    assert len(pieces) > 5 and all(len(piece) >= 1 << 20 for piece in pieces[:-1])


async def test_list_finds_a_builds_objects_and_delete_removes_them(store):
    build, other = "c" + "2" * 24, "c" + "2" * 23 + "3"
    keys = [object_key(build, "log", new_attempt()), object_key(build, "event", new_attempt())]
    for key in [*keys, object_key(other, "log", "0" * 16)]:
        await store.put(key, frames(2, 1000, 7), timeout=TIMEOUT)
    listed = await store.list(build_prefix(build), timeout=TIMEOUT)
    assert sorted(info.key for info in listed) == sorted(keys)
    assert all(info.size == 2000 and info.modified.tzinfo is not None for info in listed)
    assert {attempt_of(info.key) for info in listed} == {attempt_of(key) for key in keys}
    assert len(await store.list("builds/", timeout=TIMEOUT, limit=2)) == 2
    await store.delete([*keys, object_key(build, "log", "never-written")], timeout=TIMEOUT)
    assert await store.list(build_prefix(build), timeout=TIMEOUT) == []
    assert [info.key for info in await store.list(build_prefix(other), timeout=TIMEOUT)] == [object_key(other, "log", "0" * 16)]


async def test_a_missing_object_or_a_range_past_its_end_is_object_missing(store):
    key = object_key("c" + "4" * 24, "log", new_attempt())
    with pytest.raises(ObjectMissing, match="is not in the store") as caught:
        await store.get(key, 0, 10, timeout=TIMEOUT)
    assert caught.value.key == key
    with pytest.raises(ObjectMissing, match="is not in the store"):
        [piece async for piece in store.stream(key, 0, 10, timeout=TIMEOUT)]
    await store.put(key, [b"x" * 1000], timeout=TIMEOUT)
    with pytest.raises(ObjectMissing, match="ends before byte 1010"):
        await store.get(key, 990, 1010, timeout=TIMEOUT)          # the object is shorter than the index says
    with pytest.raises(ObjectMissing, match="shorter than the index says"):
        await store.get(key, 2000, 2010, timeout=TIMEOUT)         # the range starts past its end
    with pytest.raises(ObjectMissing, match="ends before byte 1010"):
        [piece async for piece in store.stream(key, 500, 1010, timeout=TIMEOUT)]


async def test_a_failed_upload_leaves_no_object(store):
    key = object_key("c" + "5" * 24, "log", new_attempt())

    async def broken() -> AsyncIterator[bytes]:
        yield os.urandom(PART_BYTES + 10)
        raise RuntimeError("the database went away mid-build")

    with pytest.raises(RuntimeError, match="went away"):
        await store.put(key, broken(), timeout=TIMEOUT)
    assert await store.list(build_prefix("c" + "5" * 24), timeout=TIMEOUT) == []


async def slow_frames(first: int) -> AsyncIterator[bytes]:
    yield os.urandom(first)
    await asyncio.sleep(3600)   # the database stalls mid-build
    yield b"never"


async def test_a_put_out_of_time_aborts_its_multipart_upload(s3: MotoS3):
    bucket = s3.bucket()
    store = open_store(f"s3://{bucket}/p", config=s3.config, allow_http=True)
    key = object_key("c" + "7" * 24, "log", new_attempt())
    began = time.monotonic()
    with pytest.raises(ArchiveUnavailable, match=rf"writing '{key}' took longer than 2 s"):
        await store.put(key, slow_frames(PART_BYTES + 1000), timeout=2.0)
    assert time.monotonic() - began < 2.0 + LATE
    assert await store.list("builds/", timeout=TIMEOUT) == []
    assert s3.incomplete_uploads(bucket) == []      # aborted: nothing stored, nothing billed


async def test_a_put_out_of_time_leaves_no_file_in_a_local_directory(tmp_path):
    store = open_store(str(tmp_path / "archive"))
    key = object_key("c" + "7" * 24, "log", new_attempt())
    with pytest.raises(ArchiveUnavailable, match=r"took longer than 1\.5 s"):
        await store.put(key, slow_frames(PART_BYTES + 1000), timeout=1.5)
    assert [path for path in (tmp_path / "archive").rglob("*") if path.is_file()] == []


async def test_a_stopped_s3_server_is_unavailable_within_the_timeout():
    with moto_s3() as s3:
        store = open_store(f"s3://{s3.bucket()}/x", config=s3.config, allow_http=True)
        key = object_key("c" + "6" * 24, "log", "a")
        await store.put(key, [b"abc"], timeout=TIMEOUT)
        assert await store.get(key, 0, 3, timeout=TIMEOUT) == b"abc"
        s3.stop()
        for call in (store.get(key, 0, 3, timeout=1.5), store.list("builds/", timeout=1.5),
                     store.put(key, [b"abc"], timeout=1.5), store.delete([key], timeout=1.5)):
            began = time.monotonic()
            with pytest.raises(ArchiveUnavailable) as caught:
                await call
            assert time.monotonic() - began < 1.5 + LATE
            assert isinstance(caught.value, Unavailable) and caught.value.retry_after > 0
            message = caught.value.message
            assert message.startswith("the log archive is unavailable: ") and message.endswith("; retry in a few seconds")
            assert "\n" not in message and s3.endpoint not in message and store.where not in message
            assert caught.value.detail.startswith(store.where) and "error" in caught.value.detail


async def test_a_store_that_accepts_connections_and_never_answers_is_unavailable_at_the_timeout():
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        port = silent.getsockname()[1]
        store = open_store("s3://bucket/x", allow_http=True, config={
            "endpoint": f"http://127.0.0.1:{port}", "access_key_id": "a", "secret_access_key": "b", "region": "us-east-1"})
        began = time.monotonic()
        with pytest.raises(ArchiveUnavailable, match="took longer than 1 s"):
            await store.get("builds/x/logs-a.bpc", 0, 10, timeout=1.0)
        assert 1.0 <= time.monotonic() - began < 1.0 + LATE


async def test_a_local_directory_that_cannot_be_written_is_unavailable(tmp_path):
    store = open_store(str(tmp_path / "archive"))
    (tmp_path / "archive").rmdir()
    (tmp_path / "archive").write_text("a file where the archive directory was")   # fails for root too
    with pytest.raises(ArchiveUnavailable, match=r"is unavailable: writing 'builds/x/logs-a.bpc' failed; retry"):
        await store.put("builds/x/logs-a.bpc", [b"abc"], timeout=TIMEOUT)
    with pytest.raises(ArchiveUnavailable, match=r"is unavailable: listing 'builds/' failed; retry"):
        await store.list("builds/", timeout=TIMEOUT)


async def test_chunks_of_an_archived_log_read_back_in_one_streamed_request(store):
    build = "c" + "8" * 24
    key = object_key(build, "log", new_attempt())
    entries = list(log_entries(build, 12_000, seed=4))
    encoded = list(Encoder(build, "log", key, chunk_bytes=128 * 1024).encode(entries))
    await store.put(key, streamed([frame for frame, _ in encoded]), timeout=TIMEOUT)
    metas = [meta for _, meta in encoded]
    assert len(metas) > 8
    # One chunk by its byte range (a tail), then a run of chunks in one request (a catch-up).
    last = metas[-1]
    assert decode(await store.get(key, last.byte_offset, last.byte_end, timeout=TIMEOUT), last, after=last.last_seq - 10) == entries[-10:]
    run = metas[2:7]
    read = [(frame, meta) async for frame, meta in read_frames(store, run, timeout=TIMEOUT)]
    assert [meta for _, meta in read] == run
    assert [e for frame, meta in read for e in decode(frame, meta)] == entries[run[0].first_seq - 1:run[-1].last_seq]
    with pytest.raises(ValueError, match="not consecutive"):
        [x async for x in read_frames(store, [metas[1], metas[3]], timeout=TIMEOUT)]
