"""WatchBuild: the build's current state, then every change, until it ends."""

from __future__ import annotations

import threading

import grpc
import pytest
from buildplatform.v1 import build_pb2
from google.protobuf import field_mask_pb2, struct_pb2

from tests.e2e.streaming import append, lines, move

B = build_pb2


def test_watch_sends_the_build_then_each_change_and_ends_after_it_finishes(api, build):
    stream = api.builds.WatchBuild(B.WatchBuildRequest(id=build.id), timeout=30)
    seen: list[B.Build] = []
    first_arrived = threading.Event()

    def consume():
        for response in stream:
            seen.append(response.build)
            first_arrived.set()

    reader = threading.Thread(target=consume)
    reader.start()
    assert first_arrived.wait(10)
    move(api, build.id, B.BUILD_STATUS_INITIALIZING, B.BUILD_STATUS_RUNNING)
    progress = struct_pb2.Struct()
    progress.update({"features_done": 3, "features_total": 7})
    api.builds.UpdateBuild(B.UpdateBuildRequest(
        build=B.Build(id=build.id, progress=progress), update_mask=field_mask_pb2.FieldMask(paths=["progress"])
    ))
    append(api, build.id, lines("a log line is not a change of the build"))
    move(api, build.id, B.BUILD_STATUS_COMPLETED)
    reader.join(20)
    assert not reader.is_alive(), "WatchBuild did not end after COMPLETED"
    statuses = [b.status for b in seen]
    assert statuses[0] == B.BUILD_STATUS_PENDING
    assert statuses[-1] == B.BUILD_STATUS_COMPLETED
    # Changes may be coalesced when they come quickly, but never reordered or repeated.
    etags = [int(b.etag) for b in seen]
    assert etags == sorted(set(etags))
    assert seen[-1].progress["features_done"] == 3


def test_watch_of_a_finished_build_sends_it_once_and_ends(api, build):
    move(api, build.id, B.BUILD_STATUS_CANCELLED)
    got = list(api.builds.WatchBuild(B.WatchBuildRequest(id=build.id), timeout=10))
    assert [r.build.status for r in got] == [B.BUILD_STATUS_CANCELLED]


def test_watch_of_a_missing_build_is_not_found(api):
    with pytest.raises(grpc.RpcError) as error:
        list(api.builds.WatchBuild(B.WatchBuildRequest(id="c" + "1" * 24), timeout=10))
    assert error.value.code() == grpc.StatusCode.NOT_FOUND
