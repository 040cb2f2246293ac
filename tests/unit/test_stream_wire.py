"""The log and event streams send responses assembled from pre-serialized
lines (server.rpc.registry); they must be exactly what protobuf writes."""

from __future__ import annotations

import pytest
from buildplatform.v1 import build_event_pb2 as E
from buildplatform.v1 import build_log_pb2 as L
from google.protobuf import struct_pb2, timestamp_pb2

from server.core.feeds_wire import stream_response
from server.live.records import repeated_field_1


def _log(seq: int, size: int) -> L.BuildLog:
    metadata = struct_pb2.Struct()
    metadata.update({"n": seq})
    return L.BuildLog(
        id=seq, build_id="c" + "a" * 24, sequence=seq, level=L.LOG_LEVEL_TOOL, message="é" * size,
        metadata=metadata, create_time=timestamp_pb2.Timestamp(seconds=1_700_000_000 + seq, nanos=seq),
    )


@pytest.mark.parametrize("sizes", [[], [0], [1, 200, 70_000], [127, 128, 16_383, 16_384]])
@pytest.mark.parametrize("cursor", [0, 1, 127, 128, 2**40])
@pytest.mark.parametrize("caught_up", [False, True])
def test_assembled_log_responses_equal_protobuf_serialization(sizes, cursor, caught_up):
    logs = [_log(i + 1, size) for i, size in enumerate(sizes)]
    assembled = stream_response([repeated_field_1(log.SerializeToString()) for log in logs], cursor, caught_up)
    expected = L.StreamBuildLogsResponse(logs=logs, cursor=cursor, caught_up=caught_up)
    assert assembled == expected.SerializeToString()
    assert L.StreamBuildLogsResponse.FromString(assembled) == expected


def test_assembled_event_responses_equal_protobuf_serialization():
    data = struct_pb2.Struct()
    data.update({"path": "src/app.tsx"})
    events = [E.BuildEvent(id=i, build_id="b", sequence=i, type="file_created", data=data) for i in range(1, 4)]
    assembled = stream_response([repeated_field_1(e.SerializeToString()) for e in events], 3, True)
    assert assembled == E.StreamBuildEventsResponse(events=events, cursor=3, caught_up=True).SerializeToString()
