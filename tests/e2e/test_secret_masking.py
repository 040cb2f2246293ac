"""Secrets masked at ingest, through the real server (docs/secrets.md):
registered at CreateBuild and by RegisterBuildSecrets, masked in every read
of logs and events, stored nowhere unmasked, never echoed, dropped when the
build finishes, and applied by every replica."""

from __future__ import annotations

import base64
import urllib.request
import uuid
from types import SimpleNamespace

import grpc
import psycopg
import pytest
from buildplatform.v1 import build_event_pb2 as E
from buildplatform.v1 import build_log_pb2 as L
from buildplatform.v1 import build_pb2
from google.protobuf import struct_pb2

from tests.e2e.streaming import error_info, finish, lines, start_running, violations
from tests.support import open_channel, running_server, stubs

MASK = "***"


def secret(tag: str) -> str:
    return f"{tag}-{uuid.uuid4().hex}"


def create(api: SimpleNamespace, user, project, **fields) -> build_pb2.Build:  # type: ignore[no-untyped-def]
    return api.builds.CreateBuild(build_pb2.CreateBuildRequest(
        build=build_pb2.Build(user_id=user.id, project_id=project.id, app_spec="# app"), **fields
    )).build


def register(api: SimpleNamespace, build_id: str, *values: str) -> build_pb2.RegisterBuildSecretsResponse:
    return api.builds.RegisterBuildSecrets(build_pb2.RegisterBuildSecretsRequest(build_id=build_id, secrets=values))


def append_logs(api: SimpleNamespace, build_id: str, entries: list[L.LogEntry]) -> None:
    api.logs.AppendBuildLogs(L.AppendBuildLogsRequest(build_id=build_id, entries=entries))


def struct(**values: object) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(values)
    return out


def listed(api: SimpleNamespace, build_id: str) -> list[L.BuildLog]:
    return list(api.logs.ListBuildLogs(L.ListBuildLogsRequest(build_id=build_id, page_size=1000)).logs)


def rows_text(database_url: str, build_id: str) -> str:
    """Every row of the build in builds, build_logs and build_events, as text."""
    with psycopg.connect(database_url) as conn:
        found = []
        for table, column in (("builds", "id"), ("build_logs", "build_id"), ("build_events", "build_id")):
            found += [r[0] for r in conn.execute(f"SELECT t::text FROM {table} AS t WHERE {column} = %s", (build_id,))]
        return "\n".join(found)


def stored_secrets(database_url: str, build_id: str) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT count(*) FROM build_secrets WHERE build_id = %s", (build_id,)).fetchone()
        assert row is not None
        return int(row[0])


def test_secrets_are_masked_in_every_read_and_stored_nowhere(api, server, database_url, user, project):
    at_create, by_rpc = secret("created"), secret("registered")
    build = create(api, user, project, secrets=[at_create])
    assert at_create not in str(build) and at_create not in build.SerializeToString().decode(errors="replace")
    start_running(api, build.id)
    append_logs(api, build.id, [
        L.LogEntry(level=L.LOG_LEVEL_TOOL, message=f"curl -H 'token: {at_create}' https://x",
                   metadata=struct(command=f"deploy --key={at_create}", nested={"list": [at_create, "ok"]})),
        L.LogEntry(level=L.LOG_LEVEL_INFO, message=f"{by_rpc} is not registered yet"),
    ])
    answered = register(api, build.id, by_rpc, at_create)
    assert answered.secret_count == 2 and by_rpc not in str(answered)
    encoded = base64.b64encode(f"user:{by_rpc}".encode()).decode()
    append_logs(api, build.id, lines(f"now {by_rpc}.", f"Authorization: Basic {encoded}"))
    api.events.AppendBuildEvents(E.AppendBuildEventsRequest(build_id=build.id, entries=[
        E.EventEntry(type="deploy.started", data=struct(url=f"https://u:{by_rpc}@host", key=at_create)),
    ]))

    logs = listed(api, build.id)
    assert logs[0].message == f"curl -H 'token: {MASK}' https://x"
    assert logs[0].metadata["command"] == f"deploy --key={MASK}"
    assert list(logs[0].metadata["nested"]["list"]) == [MASK, "ok"]
    assert logs[1].message == f"{by_rpc} is not registered yet"   # appended before it was registered
    assert logs[2].message == f"now {MASK}."
    assert MASK in logs[3].message and by_rpc not in base64.b64decode(logs[3].message.split()[-1] + "==", validate=False).decode(errors="replace")
    streamed = [log for r in api.logs.StreamBuildLogs(L.StreamBuildLogsRequest(build_id=build.id), timeout=30) for log in r.logs]
    assert [log.message for log in streamed] == [log.message for log in logs]
    events = list(api.events.ListBuildEvents(E.ListBuildEventsRequest(build_id=build.id)).events)
    assert events[0].data["url"] == f"https://u:{MASK}@host" and events[0].data["key"] == MASK
    streamed_events = [e for r in api.events.StreamBuildEvents(E.StreamBuildEventsRequest(build_id=build.id), timeout=30)
                       for e in r.events]
    assert [e.data for e in streamed_events] == [e.data for e in events]

    stored = rows_text(database_url, build.id)
    assert at_create not in stored
    assert stored.count(by_rpc) == 1   # only the line appended before registration
    assert stored_secrets(database_url, build.id) == 2
    finish(api, build.id)
    assert stored_secrets(database_url, build.id) == 0   # gone with the transition that finished the build
    assert at_create not in server.log() and by_rpc not in server.log()
    with urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=10) as response:
        metrics = response.read().decode()
    assert "RegisterBuildSecrets" in metrics   # the call is counted ...
    assert at_create not in metrics and by_rpc not in metrics   # ... its values are nowhere


def test_registration_errors_name_the_field_and_never_the_value(api, server, database_url, user, project, build):
    short, long_enough = "abc12", secret("fine")
    with pytest.raises(grpc.RpcError) as caught:
        register(api, build.id, long_enough, short)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(violations(caught.value)) == {"secrets[1]"}
    assert "at least 6 characters" in violations(caught.value)["secrets[1]"]
    assert short not in (caught.value.details() or "") and long_enough not in (caught.value.details() or "")
    assert stored_secrets(database_url, build.id) == 0   # a rejected request writes nothing

    with pytest.raises(grpc.RpcError) as empty:
        register(api, build.id)
    assert empty.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "secrets" in violations(empty.value)

    with pytest.raises(grpc.RpcError) as missing:
        register(api, "c" + "0" * 24, long_enough)
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND

    with pytest.raises(grpc.RpcError) as at_create:
        create(api, user, project, secrets=["x" * 3])
    assert at_create.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(violations(at_create.value)) == {"secrets[0]"}

    finish(api, build.id)
    with pytest.raises(grpc.RpcError) as finished:
        register(api, build.id, long_enough)
    assert finished.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_info(finished.value).reason == "BUILD_FINISHED"
    assert short not in server.log() and long_enough not in server.log()


def test_an_agent_token_registers_for_its_own_build_only(api, server, make_build):
    mine, other = make_build(), make_build()
    token = api.builds.CreateAgentToken(build_pb2.CreateAgentTokenRequest(build_id=mine.id)).token
    value = secret("agent")
    with open_channel(server.address, None, token) as channel:
        agent = stubs(channel)
        assert register(agent, mine.id, value).secret_count == 1
        with pytest.raises(grpc.RpcError) as denied:
            register(agent, other.id, secret("elsewhere"))
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
        start_running(api, mine.id)
        append_logs(agent, mine.id, lines(f"echo {value}"))
    assert listed(api, mine.id)[0].message == f"echo {MASK}"


def test_token_shapes_are_masked_unless_the_build_turns_them_off(api, user, project):
    github = "ghp_" + "Ab1" * 12
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl"
    masking = create(api, user, project)
    plain = create(api, user, project, disable_token_shape_masking=True, secrets=["registered-anyway"])
    for build in (masking, plain):
        start_running(api, build.id)
        append_logs(api, build.id, lines(f"GITHUB_TOKEN={github}", f"Bearer {jwt}", "registered-anyway"))
    assert [log.message for log in listed(api, masking.id)] == [
        f"GITHUB_TOKEN={MASK}", f"Bearer {MASK}", "registered-anyway"]
    assert [log.message for log in listed(api, plain.id)] == [f"GITHUB_TOKEN={github}", f"Bearer {jwt}", MASK]


def test_a_multi_line_secret_is_masked_line_by_line_across_entries_and_batches(api, build):
    key = "-----BEGIN OPENSSH KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\nQyNTUxOQAAACDx7Zq1Wm9s\n-----END OPENSSH KEY-----\n"
    register(api, build.id, key)
    start_running(api, build.id)
    body = key.splitlines()
    append_logs(api, build.id, lines(*body[:2]))          # one batch ...
    append_logs(api, build.id, lines(*body[2:]))          # ... and the next
    assert [log.message for log in listed(api, build.id)] == [MASK] * 4


def test_a_secret_cut_across_two_entries_is_not_joined_as_documented(api, build):
    value = secret("split")
    register(api, build.id, value)
    start_running(api, build.id)
    half = len(value) // 2
    append_logs(api, build.id, lines(value[:half], value[half:]))   # two entries of one batch
    append_logs(api, build.id, lines(value[:half]))                 # and across two batches
    append_logs(api, build.id, lines(value[half:]))
    messages = [log.message for log in listed(api, build.id)]
    # Each entry is masked on its own: neither half is a registered value.
    assert messages == [value[:half], value[half:], value[:half], value[half:]]


def test_every_replica_masks_with_the_secrets_registered_on_another(api, database_url, build):
    value = secret("replica")
    start_running(api, build.id)
    with running_server(database_url) as other, other.channel() as channel:
        replica = stubs(channel)
        append_logs(replica, build.id, lines("warm the other replica's masker"))
        register(api, build.id, value)                       # on the session's server
        append_logs(replica, build.id, lines(f"printed {value}"))  # on the other one, masked with the new set
    assert [log.message for log in listed(api, build.id)][-1] == f"printed {MASK}"


def test_over_http_a_secret_is_registered_masked_and_never_answered(api, server, build):
    value = secret("http")
    http = server.http()
    registered = http.unary("buildplatform.v1.BuildService/RegisterBuildSecrets",
                            build_pb2.RegisterBuildSecretsRequest(build_id=build.id, secrets=[value]),
                            build_pb2.RegisterBuildSecretsResponse)
    assert registered.response.secret_count == 1
    refused = http.unary("buildplatform.v1.BuildService/RegisterBuildSecrets",
                         build_pb2.RegisterBuildSecretsRequest(build_id=build.id, secrets=["tiny"]),
                         build_pb2.RegisterBuildSecretsResponse)
    assert refused.code == "INVALID_ARGUMENT" and "secrets[0]" in refused.message and "tiny" not in refused.message
    start_running(api, build.id)
    http.unary("buildplatform.v1.BuildLogService/AppendBuildLogs",
               L.AppendBuildLogsRequest(build_id=build.id, entries=lines(f"echo {value}")), L.AppendBuildLogsResponse)
    request = f'{{"build_id": "{build.id}"}}'.encode()   # a plain JSON POST, as curl sends it
    status, _, body = http.request("POST", "/buildplatform.v1.BuildLogService/ListBuildLogs", request,
                                   {"content-type": "application/json", "authorization": f"Bearer {server.token}"})
    assert status == 200 and value.encode() not in body and b"echo ***" in body
    got = api.builds.GetBuild(build_pb2.GetBuildRequest(id=build.id)).build
    listed_builds = api.builds.ListBuilds(build_pb2.ListBuildsRequest(project_id=build.project_id))
    assert value.encode() not in got.SerializeToString() + listed_builds.SerializeToString()


def test_a_retry_is_acknowledged_whether_its_lines_were_masked_or_written_before_registration(api, build):
    early, late = secret("early"), secret("late")
    register(api, build.id, early)
    start_running(api, build.id)
    first = lines(f"uses {early}", f"uses {late}")
    api.logs.AppendBuildLogs(L.AppendBuildLogsRequest(build_id=build.id, entries=first, first_sequence=1))
    register(api, build.id, late)   # registered between the attempt and its retry
    retry = api.logs.AppendBuildLogs(L.AppendBuildLogsRequest(build_id=build.id, entries=first, first_sequence=1))
    assert (retry.first_sequence, retry.last_sequence, retry.already_written) == (1, 2, True)
    plain = lines("no secret here", "nor here")
    api.logs.AppendBuildLogs(L.AppendBuildLogsRequest(build_id=build.id, entries=plain, first_sequence=3))
    again = api.logs.AppendBuildLogs(L.AppendBuildLogsRequest(build_id=build.id, entries=plain, first_sequence=3))
    assert again.already_written
    assert [log.message for log in listed(api, build.id)] == [
        f"uses {MASK}", f"uses {late}", "no secret here", "nor here"]
