"""OpenTelemetry traces, exported over OTLP/HTTP to a local receiver
(tests.observability) that decodes what a collector would get."""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator
from typing import Any

import grpc
import psycopg
import pytest
from buildplatform.v1 import build_log_pb2 as L
from buildplatform.v1 import build_pb2, user_pb2
from google.protobuf import json_format
from opentelemetry.proto.trace.v1 import trace_pb2

from tests.e2e.streaming import lines, new_build, start_running
from tests.observability import OtlpReceiver, attributes, otlp_receiver
from tests.support import ServerProcess, eventually, fails_with_one_line, running_server, stubs

GET_BUILD = "buildplatform.v1.BuildService/GetBuild"
SERVER, CLIENT = trace_pb2.Span.SPAN_KIND_SERVER, trace_pb2.Span.SPAN_KIND_CLIENT
MISSING = "c" + "0" * 24


def traceparent() -> tuple[str, str, str]:
    """A caller's W3C traceparent, its trace id and its span id (hex)."""
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return f"00-{trace_id}-{span_id}-01", trace_id, span_id


def spans_of(receiver: OtlpReceiver, trace_id: str) -> list[trace_pb2.Span]:
    return [span for span in receiver.all() if span.trace_id.hex() == trace_id]


def rpc_span(receiver: OtlpReceiver, trace_id: str, name: str = GET_BUILD) -> trace_pb2.Span:
    eventually(lambda: any(s.name == name for s in spans_of(receiver, trace_id)), f"the span of {name}")
    return next(s for s in spans_of(receiver, trace_id) if s.name == name)


def access_line(proc: ServerProcess, method: str, trace_id: str) -> dict[str, Any]:
    def found() -> dict[str, Any] | None:
        for line in list(proc.lines):
            if line.startswith("{") and trace_id in line:
                record = json.loads(line)
                if record.get("msg") == "rpc" and record.get("method") == method:
                    return record
        return None

    eventually(lambda: found() is not None, "the access log line")
    record = found()
    assert record is not None
    return record


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    with otlp_receiver() as received:
        yield received


@pytest.fixture(scope="module")
def traced(database_url: str, receiver: OtlpReceiver) -> Iterator[ServerProcess]:
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "100"}
    with running_server(database_url, **env) as proc:
        yield proc


def test_the_start_says_tracing_is_on_and_where_spans_go(traced, receiver):
    line = next(json.loads(text) for text in traced.lines if '"tracing"' in text)
    assert line["tracing"] == "on" and line["otel_sdk_loaded"] is True
    assert f"{receiver.endpoint}/v1/traces" in line["msg"]


def test_a_grpc_call_joins_the_callers_trace_and_its_statements_are_its_children(traced, receiver):
    with traced.channel() as channel:
        build = new_build(stubs(channel))
        header, trace_id, parent_id = traceparent()
        reply = stubs(channel).builds.GetBuild(build_pb2.GetBuildRequest(id=build.id),
                                               metadata=[("traceparent", header)])
        assert reply.build.id == build.id
    span = rpc_span(receiver, trace_id)
    assert span.parent_span_id.hex() == parent_id and span.kind == SERVER
    assert attributes(span) == {
        "rpc.system": "grpc", "rpc.service": "buildplatform.v1.BuildService", "rpc.method": "GetBuild",
        "rpc.grpc.status_code": 0, "buildplatform.transport": "grpc",
    }
    assert span.status.code == trace_pb2.Status.STATUS_CODE_UNSET
    eventually(lambda: any(s.kind == CLIENT for s in spans_of(receiver, trace_id)), "a statement's span")
    statements = [s for s in spans_of(receiver, trace_id) if s.kind == CLIENT]
    reads = [s for s in statements if 'FROM "builds" WHERE id' in attributes(s)["db.query.text"]]
    assert reads, [attributes(s)["db.query.text"] for s in statements]
    for statement in statements:
        assert statement.parent_span_id == span.span_id
        assert span.start_time_unix_nano <= statement.start_time_unix_nano <= statement.end_time_unix_nano
        assert statement.end_time_unix_nano <= span.end_time_unix_nano
    read = attributes(reads[0])
    assert read["db.system.name"] == "postgresql" and read["db.operation.name"] == "SELECT"
    assert read["db.namespace"] == psycopg.conninfo.conninfo_to_dict(traced.database_url)["dbname"]
    assert build.id not in read["db.query.text"], "parameters stay out of spans"
    assert access_line(traced, f"/{GET_BUILD}", trace_id)["trace_id"] == trace_id


def test_an_http_call_joins_the_callers_trace_from_its_header(traced, receiver):
    with traced.channel() as channel:
        build = new_build(stubs(channel))
    header, trace_id, parent_id = traceparent()
    status, _, _ = traced.http().request(
        "POST", f"/{GET_BUILD}", json_format.MessageToJson(build_pb2.GetBuildRequest(id=build.id)).encode(),
        {"content-type": "application/json", "connect-protocol-version": "1", "traceparent": header,
         "authorization": f"Bearer {traced.token}"})
    assert status == 200
    span = rpc_span(receiver, trace_id)
    assert span.parent_span_id.hex() == parent_id and span.kind == SERVER
    assert attributes(span)["rpc.system"] == "connect_rpc"
    assert attributes(span)["buildplatform.transport"] == "http"
    assert attributes(span)["rpc.grpc.status_code"] == 0
    eventually(lambda: any(s.parent_span_id == span.span_id for s in spans_of(receiver, trace_id)),
               "a statement's span under the call's")
    record = access_line(traced, f"/{GET_BUILD}", trace_id)
    assert record["transport"] == "http" and record["trace_id"] == trace_id


def test_a_write_through_sqlalchemy_is_a_child_span_too(traced, receiver):
    header, trace_id, _ = traceparent()
    clerk = f"user_{secrets.token_hex(6)}"
    with traced.channel() as channel:
        stubs(channel).users.CreateUser(
            user_pb2.CreateUserRequest(user=user_pb2.User(clerk_id=clerk, email=f"{clerk}@example.com")),
            metadata=[("traceparent", header)])
    span = rpc_span(receiver, trace_id, "buildplatform.v1.UserService/CreateUser")
    eventually(lambda: any("INSERT INTO users" in attributes(s).get("db.query.text", "")
                           for s in spans_of(receiver, trace_id)), "the INSERT's span")
    insert = next(s for s in spans_of(receiver, trace_id) if "INSERT INTO users" in attributes(s)["db.query.text"])
    assert insert.parent_span_id == span.span_id and attributes(insert)["db.operation.name"] == "INSERT"
    assert clerk not in attributes(insert)["db.query.text"]


def test_a_failed_call_carries_its_status_and_a_call_without_traceparent_starts_a_trace(traced, receiver):
    with traced.channel() as channel, pytest.raises(grpc.RpcError) as missing:
        stubs(channel).builds.GetBuild(build_pb2.GetBuildRequest(id=MISSING))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND

    def the_span() -> trace_pb2.Span | None:
        for span in receiver.named(GET_BUILD):
            if attributes(span).get("rpc.grpc.status_code") == grpc.StatusCode.NOT_FOUND.value[0]:
                return span
        return None

    eventually(lambda: the_span() is not None, "the NOT_FOUND call's span")
    span = the_span()
    assert span is not None
    assert span.parent_span_id == b"", "no traceparent: a root span"
    assert span.status.code == trace_pb2.Status.STATUS_CODE_UNSET, "NOT_FOUND is the caller's, not a server error"


def test_a_follow_streams_span_ends_when_it_has_caught_up(traced, receiver):
    header, trace_id, parent_id = traceparent()
    with traced.channel() as channel:
        api = stubs(channel)
        build = new_build(api)
        start_running(api, build.id)
        api.logs.AppendBuildLogs(L.AppendBuildLogsRequest(build_id=build.id, entries=lines("a", "b")))
        follower = api.logs.StreamBuildLogs(L.StreamBuildLogsRequest(build_id=build.id, follow=True),
                                            metadata=[("traceparent", header)], timeout=60)
        received = iter(follower)
        assert next(received).caught_up
        # Still following, and the span is already exported, whole.
        span = rpc_span(receiver, trace_id, "buildplatform.v1.BuildLogService/StreamBuildLogs")
        assert attributes(span)["buildplatform.stream.caught_up"] is True
        assert span.parent_span_id.hex() == parent_id
        assert "rpc.grpc.status_code" not in attributes(span), "the stream has not ended"
        catch_up = [s for s in spans_of(receiver, trace_id) if s.kind == CLIENT]
        assert catch_up and all(s.parent_span_id == span.span_id for s in catch_up)
        # Live lines make no spans under the ended one.
        api.logs.AppendBuildLogs(L.AppendBuildLogsRequest(build_id=build.id, entries=lines("c")))
        assert [log.message for log in next(m for m in received if m.logs).logs] == ["c"]
        follower.cancel()
    record = access_line(traced, "/buildplatform.v1.BuildLogService/StreamBuildLogs", trace_id)
    assert record["code"] == "CANCELLED"
    assert len([s for s in spans_of(receiver, trace_id) if s.kind == SERVER]) == 1
    assert all(s.parent_span_id == span.span_id for s in spans_of(receiver, trace_id) if s.kind == CLIENT)


def test_health_checks_make_no_spans(traced, receiver):
    from tests.support import health

    for _ in range(3):
        assert health(traced.address) == 1   # SERVING
    # A call made after them: once its span is in, theirs would be too.
    header, trace_id, _ = traceparent()
    with traced.channel() as channel, pytest.raises(grpc.RpcError):
        stubs(channel).builds.GetBuild(build_pb2.GetBuildRequest(id=MISSING), metadata=[("traceparent", header)])
    rpc_span(receiver, trace_id)
    assert not any("grpc.health" in span.name for span in receiver.all())


def test_with_the_exporter_none_nothing_is_sent_and_the_sdk_is_not_loaded(database_url):
    """OTEL_TRACES_EXPORTER=none wins over an endpoint: tracing is off, and
    the process says, from its own sys.modules, that the SDK is not in it."""
    with otlp_receiver() as quiet:
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": quiet.endpoint, "OTEL_TRACES_EXPORTER": "none",
               "OTEL_BSP_SCHEDULE_DELAY": "100"}
        with running_server(database_url, **env) as proc, proc.channel() as channel:
            header, _, _ = traceparent()
            build = new_build(stubs(channel))
            stubs(channel).builds.GetBuild(build_pb2.GetBuildRequest(id=build.id), metadata=[("traceparent", header)])
            line = next(json.loads(text) for text in proc.lines if '"tracing"' in text)
            assert line["tracing"] == "off" and line["otel_sdk_loaded"] is False
        assert quiet.all() == []
    served = [json.loads(line) for line in proc.lines if '"msg": "rpc"' in line and GET_BUILD in line]
    assert served and all("trace_id" not in record for record in served)


def test_the_default_server_has_no_tracing_and_no_sdk(database_url):
    assert not [name for name in os.environ if name.startswith("OTEL_")]
    # Without OTEL_* settings the line is said at DEBUG (start-up at INFO is what a person needs).
    with running_server(database_url, LOG_LEVEL="DEBUG") as proc:
        line = next(json.loads(text) for text in proc.lines if '"tracing"' in text)
    assert line["tracing"] == "off" and line["otel_sdk_loaded"] is False
    assert not [text for text in proc.lines if '"tracing"' in text and '"level": "INFO"' in text]


@pytest.mark.parametrize(
    ("env", "said"),
    [
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
         "OTEL_EXPORTER_OTLP_PROTOCOL='grpc' is not supported"),
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, "OTEL_TRACES_EXPORTER='zipkin' names 'zipkin'"),
    ],
)
def test_otel_settings_this_server_cannot_honour_are_refused_in_one_line(database_url, env, said):
    line = fails_with_one_line({"DATABASE_URL": database_url, **env})
    assert said in line, line
