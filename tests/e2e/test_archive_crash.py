"""The archiver under real SIGKILLs of a real server process.

A server stopped at each step of an attempt (ARCHIVE_TEST_PAUSE_AT: before
the upload, after the upload and before the index, after the index commit) is
killed with SIGKILL there; another server then archives the build. Every line
and event reads back exactly once in order, from the stubs and from the
archived chunks, and once the dead attempt's lease is over the store holds
exactly the objects the index names. Two servers on one database archive each
build exactly once.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import psycopg
import pytest
from buildplatform.v1 import build_event_pb2 as E
from buildplatform.v1 import build_log_pb2 as L
from google.protobuf import struct_pb2
from psycopg.rows import dict_row

from server import migrate
from server.archive.chunks import ChunkMeta, decode
from server.archive.job import PAUSE_STEPS
from server.archive.objects import attempt_of, open_store
from tests.e2e.streaming import INFO, WARN, append, finish, new_build
from tests.e2e.test_metrics import sample, scrape
from tests.support import (
    ServerProcess,
    create_database,
    drop_database,
    eventually,
    running_server,
    stubs,
)

LEASE = 2.0
ARCHIVING = {
    "ARCHIVE_AFTER_SECONDS": "0",
    "ARCHIVE_INTERVAL_SECONDS": "0.2",
    "ARCHIVE_LEASE_SECONDS": f"{LEASE:g}",
}


@pytest.fixture
def archive_db(postgres: str) -> Iterator[str]:
    url = create_database(postgres, prefix="bp_archive")
    migrate.upgrade(url)
    yield url
    drop_database(postgres, url)


class Store:
    """The archive a test's servers write to (a local directory, or a bucket
    of moto's S3 server), listed and read through the archive's own client."""

    def __init__(self, url: str, env: dict[str, str], config: dict[str, str] | None = None) -> None:
        self.url, self.env = url, env
        self.store = open_store(url, config=config, allow_http=True if config else None)

    def objects(self) -> set[str]:
        return {item.key for item in asyncio.run(self.store.list("builds/", timeout=10))}

    def read(self, key: str, start: int, end: int) -> bytes:
        return asyncio.run(self.store.get(key, start, end, timeout=10))


@pytest.fixture(params=["local"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if request.param == "s3":
        s3 = request.getfixturevalue("s3")
        bucket = s3.bucket()
        return Store(f"s3://{bucket}/archive", s3.env, s3.config)
    return Store(str(tmp_path / "archive"), {})


def _env(store: Store, **extra: str) -> dict[str, str]:
    return {"ARCHIVE_URL": store.url, **store.env, **ARCHIVING, **extra}


def _lines(count: int) -> list[L.LogEntry]:
    # About 1 KiB each, so a few thousand lines make more than one chunk.
    return [
        L.LogEntry(level=WARN if i % 7 == 0 else INFO, message=f"line {i:06d} " + "compiling module " * 60)
        for i in range(count)
    ]


def _events(count: int) -> list[E.EventEntry]:
    entries = []
    for i in range(count):
        data = struct_pb2.Struct()
        data.update({"index": i, "step": f"step-{i}"})
        entries.append(E.EventEntry(type="step.finished" if i % 2 else "step.started", data=data))
    return entries


def _seed(api: SimpleNamespace, lines: int, events: int) -> str:
    """A finished build with `lines` lines and `events` events."""
    build = new_build(api)
    finish_later = build.id
    entries = _lines(lines)
    for start in range(0, lines, 1000):
        append(api, build.id, entries[start:start + 1000])
    if events:
        api.events.AppendBuildEvents(E.AppendBuildEventsRequest(build_id=build.id, entries=_events(events)))
    finish(api, finish_later)
    return build.id


def _list_all(api: SimpleNamespace, build_id: str, events: bool = False) -> list[tuple[int, str]]:
    found: list[tuple[int, str]] = []
    token = ""
    while True:
        if events:
            page = api.events.ListBuildEvents(E.ListBuildEventsRequest(build_id=build_id, page_token=token))
            found += [(item.sequence, item.type) for item in page.events]
        else:
            page = api.logs.ListBuildLogs(L.ListBuildLogsRequest(build_id=build_id, page_token=token))
            found += [(item.sequence, item.message) for item in page.logs]
        token = page.next_page_token
        if not token:
            return found


def _state(database_url: str, build_id: str) -> dict:
    with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as conn:
        build = conn.execute("SELECT archive_state, archive_time, last_log_seq, last_event_seq FROM builds "
                             "WHERE id = %s", (build_id,)).fetchone()
        chunks = conn.execute("SELECT * FROM archive_chunks WHERE build_id = %s ORDER BY kind, chunk",
                              (build_id,)).fetchall()
        claims = conn.execute("SELECT * FROM archive_claims WHERE build_id = %s", (build_id,)).fetchall()
    assert build is not None
    return {**build, "chunks": chunks, "claims": claims}


def _archived(database_url: str, build_id: str) -> bool:
    return _state(database_url, build_id)["archive_state"] == "archived"


def _read_archive(store: Store, chunks: list[dict], kind: str) -> list[int]:
    """The seqs of every archived record of `kind`, chunk by chunk, each
    chunk read by its byte range and checked (crc32, zstd checksum)."""
    seqs: list[int] = []
    for row in chunks:
        if row["kind"] != kind:
            continue
        meta = ChunkMeta.from_row(row)
        frame = store.read(meta.object_key, meta.byte_offset, meta.byte_end)
        seqs += [entry.seq for entry in decode(frame, meta)]
    return seqs


def _assert_whole(database_url: str, store: Store, api: SimpleNamespace, build_id: str,
                  lines: int, events: int) -> None:
    """Every line and event once, in order: over the stubs and in the archive;
    the store holds exactly the committed objects."""
    listed = _list_all(api, build_id)
    assert [seq for seq, _ in listed] == list(range(1, lines + 1))
    assert [message[:12] for _, message in listed] == [f"line {i:06d} " for i in range(lines)]
    assert [seq for seq, _ in _list_all(api, build_id, events=True)] == list(range(1, events + 1))
    state = _state(database_url, build_id)
    assert state["archive_state"] == "archived" and state["archive_time"] is not None
    assert state["claims"] == []
    assert _read_archive(store, state["chunks"], "log") == list(range(1, lines + 1))
    assert _read_archive(store, state["chunks"], "event") == list(range(1, events + 1))
    assert len({row["object_key"] for row in state["chunks"] if row["kind"] == "log"}) == 1
    assert [row["chunk"] for row in state["chunks"] if row["kind"] == "log"] == list(
        range(sum(1 for row in state["chunks"] if row["kind"] == "log")))
    committed = {row["object_key"] for row in state["chunks"]}
    assert store.objects() == committed, "the store holds exactly the committed objects"


@pytest.mark.parametrize(("step", "store"), [
    *((step, "local") for step in PAUSE_STEPS), ("after-upload", "s3"),
], indirect=["store"])
def test_a_server_killed_at_each_step_leaves_every_line_once(archive_db, store, step):
    lines, events = 3000, 40
    killed = ServerProcess(archive_db, env=_env(store, ARCHIVE_TEST_PAUSE_AT=step))
    try:
        killed.start()
        with killed.channel() as channel:
            build_id = _seed(stubs(channel), lines, events)
        eventually(lambda: f"test pause at {step}" in killed.log(), f"the archiver to stop at {step}", wait=30)
    finally:
        killed.stop(sig=signal.SIGKILL)
    assert killed.proc is not None and killed.proc.returncode == -signal.SIGKILL
    state = _state(archive_db, build_id)
    left = store.objects()
    if step == "before-upload":
        assert left == set() and state["chunks"] == [] and state["archive_state"] == "hot"
    elif step == "after-upload":
        # The dead attempt's objects are there, indexed by nothing.
        assert len(left) == 2 and state["chunks"] == [] and state["archive_state"] == "hot"
        dead_attempt = {attempt_of(key) for key in left}
        assert len(dead_attempt) == 1
    else:
        assert state["archive_state"] == "archived" and len(state["chunks"]) >= 4   # 3+ log chunks, 1 event chunk
        assert left == {row["object_key"] for row in state["chunks"]}
    began = time.monotonic()
    with running_server(archive_db, **_env(store)) as proc, proc.channel() as channel:
        eventually(lambda: _archived(archive_db, build_id) and not _state(archive_db, build_id)["claims"],
                   "the build archived by the restarted server", wait=30)
        if step != "after-index":
            # The dead attempt's claim held the build until its lease was over.
            assert time.monotonic() - began >= LEASE * 0.5
        _assert_whole(archive_db, store, stubs(channel), build_id, lines, events)
        if step == "after-upload":
            assert not {attempt_of(key) for key in store.objects()} & dead_attempt
    archived_by = [line for line in proc.log().splitlines() if f"archived build {build_id}" in line]
    assert len(archived_by) == (0 if step == "after-index" else 1)


@pytest.mark.parametrize("store", ["local", "s3"], indirect=True)
def test_two_servers_on_one_database_archive_each_build_once(archive_db, store):
    counts = [(150 + 10 * i, 3) for i in range(8)]
    with running_server(archive_db, **_env(store)) as first, running_server(archive_db, **_env(store)) as second:
        # Each build is due as soon as it finishes: both servers look for it.
        with first.channel() as channel:
            api = stubs(channel)
            builds = [_seed(api, lines, events) for lines, events in counts]
        eventually(lambda: all(_archived(archive_db, build) for build in builds), "every build archived", wait=60)
        metrics = [scrape(proc) for proc in (first, second)]

        def total(name: str, **labels: str) -> float:
            return sum(sample(text, name, **labels) or 0 for text in metrics)

        assert total("buildplatform_archive_builds_total") == len(builds), metrics
        assert total("buildplatform_archive_objects_total", kind="log") == len(builds)
        assert total("buildplatform_archive_objects_total", kind="event") == len(builds)
        assert total("buildplatform_archive_bytes_total", kind="log", form="raw") > total(
            "buildplatform_archive_bytes_total", kind="log", form="stored") > 0
        # Each process samples the lag when a round begins and after each build
        # it archived: the one that archived nothing last sees the empty backlog
        # at its next round (ARCHIVE_INTERVAL_SECONDS).
        eventually(lambda: sum(sample(scrape(proc), "buildplatform_archive_lag_seconds") or 0
                               for proc in (first, second)) == 0, "the archive lag back to 0 on both servers")
        with first.channel() as channel:
            api = stubs(channel)
            for build, (lines, _) in zip(builds, counts, strict=True):
                assert [seq for seq, _ in _list_all(api, build)] == list(range(1, lines + 1))
    logs = first.log() + second.log()
    for build, (lines, events) in zip(builds, counts, strict=True):
        assert logs.count(f"archived build {build}") == 1, build
        state = _state(archive_db, build)
        assert [(row["kind"], row["chunk"]) for row in state["chunks"]] == [("event", 0), ("log", 0)]
        assert _read_archive(store, state["chunks"], "log") == list(range(1, lines + 1))
        assert _read_archive(store, state["chunks"], "event") == list(range(1, events + 1))
        assert len({row["object_key"] for row in state["chunks"]}) == 2
    committed = {row["object_key"] for build in builds for row in _state(archive_db, build)["chunks"]}
    assert store.objects() == committed and len(committed) == 2 * len(builds)


def test_with_archiving_off_nothing_is_archived(archive_db, tmp_path):
    directory = tmp_path / "archive"
    with running_server(archive_db, ARCHIVE="false", ARCHIVE_URL=str(directory), **ARCHIVING) as proc:
        with proc.channel() as channel:
            build_id = _seed(stubs(channel), 20, 2)
        time.sleep(2)   # ten times ARCHIVE_INTERVAL_SECONDS
        metrics = scrape(proc)
    assert _state(archive_db, build_id)["archive_state"] == "hot"
    # The directory may exist (readers open the store ARCHIVE_URL names even
    # with ARCHIVE=false, for builds archived before), but holds no object.
    assert not [path for path in directory.rglob("*") if path.is_file()]
    assert sample(metrics, "buildplatform_archive_builds_total") == 0
