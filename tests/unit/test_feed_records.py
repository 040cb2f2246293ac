"""The feed's records: an entry's stored size bound, recomputed from its
wire for reads of the archive, is exactly what the store kept for its row
(so archived reads cut pages and messages where hot reads cut them)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from buildplatform.v1 import build_event_pb2, build_log_pb2

from server.live.records import (
    LEVEL_TO_PB,
    event_entry,
    event_to_pb,
    item_size,
    log_entry,
    log_to_pb,
    stored_bound,
)
from server.store.feeds import wire_bound
from server.wellknown import dict_to_struct

EPOCH_2026 = datetime(2026, 1, 1, tzinfo=UTC)


def rows(seed: int, count: int = 3000):
    draw = random.Random(seed)
    for index in range(count):
        metadata = draw.choice([None, {}, {"n": index, "list": [1, "x", None, True], "nested": {"f": 2.5}}])
        message = "é" * draw.choice([0, 1, 60, 5000, 65_000])
        if not message and metadata is None:
            message = "m"
        # Whole seconds now and then: a Timestamp without nanos is shorter.
        stamp = EPOCH_2026 + timedelta(seconds=draw.randrange(10**8), microseconds=draw.choice([0, draw.randrange(10**6)]))
        yield {
            "id": draw.choice([1, 127, 128, 16_384, 10**9, 2**40]),
            "build_id": "c" + draw.choice(["k2x9", "mw0b5z1e0000abcd1234efgh"]),
            "seq": draw.choice([1, 127, 128, 16_384, 10**9]),
            "level": draw.choice(list(LEVEL_TO_PB)),
            "type": draw.choice(["step.started", "x"]),
            "message": message,
            "metadata": metadata,
            "data": metadata or {},
            "create_time": stamp,
        }


@pytest.mark.parametrize("seed", range(3))
def test_the_stored_bound_of_a_log_entry_is_the_rows_wire_bytes(seed):
    for row in rows(seed):
        appended = build_log_pb2.LogEntry(
            level=LEVEL_TO_PB[row["level"]], message=row["message"], metadata=dict_to_struct(row["metadata"])
        )
        entry = log_entry(row)
        assert stored_bound(entry) == wire_bound(appended.ByteSize()), row
        assert item_size(entry.wire) == log_to_pb(row).ByteSize()


@pytest.mark.parametrize("seed", range(3))
def test_the_stored_bound_of_an_event_is_the_rows_wire_bytes(seed):
    for row in rows(seed):
        appended = build_event_pb2.EventEntry(type=row["type"], data=dict_to_struct(row["data"]))
        entry = event_entry(row)
        assert stored_bound(entry) == wire_bound(appended.ByteSize()), row
        assert item_size(entry.wire) == event_to_pb(row).ByteSize()
