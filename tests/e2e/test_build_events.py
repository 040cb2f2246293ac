"""BuildEventService: the activity feed shares the log machinery; these
tests cover what is specific to events (types, data, type filters)."""

from __future__ import annotations

import grpc
import pytest
from buildplatform.v1 import build_event_pb2 as E
from buildplatform.v1 import build_pb2
from google.protobuf import struct_pb2

from tests.e2e.streaming import error_info, finish, start_running, violations


def event(type_: str, **data: object) -> E.EventEntry:
    struct = struct_pb2.Struct()
    struct.update(data)
    return E.EventEntry(type=type_, data=struct)


def test_events_are_appended_in_order_with_their_data(api, build):
    response = api.events.AppendBuildEvents(E.AppendBuildEventsRequest(
        build_id=build.id, entries=[event("file_created", path="src/app.tsx"), event("command_run", cmd="npm test", exit=0)]
    ))
    assert (response.first_sequence, response.last_sequence) == (1, 2)
    events = api.events.ListBuildEvents(E.ListBuildEventsRequest(build_id=build.id)).events
    assert [(e.sequence, e.type) for e in events] == [(1, "file_created"), (2, "command_run")]
    assert events[0].data["path"] == "src/app.tsx" and events[1].data["exit"] == 0
    assert api.builds.GetBuild(build_pb2.GetBuildRequest(id=build.id)).build.last_event_sequence == 2


def test_event_without_data_has_an_empty_object(api, build):
    api.events.AppendBuildEvents(E.AppendBuildEventsRequest(build_id=build.id, entries=[E.EventEntry(type="heartbeat")]))
    (stored,) = api.events.ListBuildEvents(E.ListBuildEventsRequest(build_id=build.id)).events
    assert stored.HasField("data") and len(stored.data.fields) == 0


def test_event_stream_filters_by_type_and_follows_until_the_build_ends(api, build):
    start_running(api, build.id)
    api.events.AppendBuildEvents(E.AppendBuildEventsRequest(
        build_id=build.id, entries=[event("file_created", path="a"), event("command_run", cmd="ls")]
    ))
    stream = api.events.StreamBuildEvents(
        E.StreamBuildEventsRequest(build_id=build.id, follow=True, types=["file_created"]), timeout=30
    )
    first = next(stream)
    assert [e.data["path"] for e in first.events] == ["a"] and first.caught_up
    api.events.AppendBuildEvents(E.AppendBuildEventsRequest(
        build_id=build.id, entries=[event("command_run", cmd="make"), event("file_created", path="b")]
    ))
    finish(api, build.id)
    rest = [e.data["path"] for response in stream for e in response.events]
    assert rest == ["b"]


def test_tail_events(api, build):
    api.events.AppendBuildEvents(E.AppendBuildEventsRequest(
        build_id=build.id, entries=[event("step", n=i) for i in range(5)]
    ))
    got = list(api.events.StreamBuildEvents(E.StreamBuildEventsRequest(build_id=build.id, tail_events=2)))
    assert [e.data["n"] for r in got for e in r.events] == [3, 4]


def test_event_retry_with_first_sequence_is_idempotent(api, build):
    batch = [event("file_created", path="x")]
    api.events.AppendBuildEvents(E.AppendBuildEventsRequest(build_id=build.id, entries=batch, first_sequence=1))
    retry = api.events.AppendBuildEvents(E.AppendBuildEventsRequest(build_id=build.id, entries=batch, first_sequence=1))
    assert retry.already_written
    assert len(api.events.ListBuildEvents(E.ListBuildEventsRequest(build_id=build.id)).events) == 1


@pytest.mark.parametrize(
    ("entries", "field"),
    [
        ([E.EventEntry(type="")], "entries[0].type"),
        ([E.EventEntry(type="ok"), E.EventEntry(type="Bad Type")], "entries[1].type"),
        ([E.EventEntry(type="x" * 65)], "entries[0].type"),
        ([event("ok", text="a\x00b")], "entries[0].data.text"),
        ([event("ok", blob="x" * 70000)], "entries[0].data"),
    ],
    ids=["empty-type", "bad-type", "long-type", "nul", "too-big"],
)
def test_bad_events_are_invalid_argument_naming_the_entry(api, build, entries, field):
    with pytest.raises(grpc.RpcError) as error:
        api.events.AppendBuildEvents(E.AppendBuildEventsRequest(build_id=build.id, entries=entries))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in violations(error.value)
    assert api.builds.GetBuild(build_pb2.GetBuildRequest(id=build.id)).build.last_event_sequence == 0


def test_events_of_a_finished_build_are_refused(api, build):
    finish(api, build.id)
    with pytest.raises(grpc.RpcError) as error:
        api.events.AppendBuildEvents(E.AppendBuildEventsRequest(build_id=build.id, entries=[event("late")]))
    assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_info(error.value).metadata["current_status"] == "COMPLETED"


def test_type_filter_must_hold_valid_types(api, build):
    with pytest.raises(grpc.RpcError) as error:
        api.events.ListBuildEvents(E.ListBuildEventsRequest(build_id=build.id, types=["NOT VALID"]))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "types[0]" in violations(error.value)
