"""The HTTP port: the same services, the same answers as the gRPC port.

Every call here is made twice where it can be, once with the generated gRPC
stubs and once over HTTP/1.1 (Connect JSON and binary, gRPC-Web), against the
session's server, and the answers must be the same: the same status code,
message and google.rpc details, or the same response message.
"""

from __future__ import annotations

import json
import shutil
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import grpc
import pytest
from buildplatform.v1 import (
    build_log_pb2 as L,
)
from buildplatform.v1 import (
    build_pb2,
    project_pb2,
    user_pb2,
)
from google.protobuf import field_mask_pb2, json_format, message_factory
from google.protobuf.descriptor import ServiceDescriptor
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2

from server.app import SERVICES
from tests.auth_support import ORIGIN
from tests.e2e.streaming import append, finish, lines, start_running
from tests.http_support import HttpClient, Outcome, grpc_outcome
from tests.support import (
    ROOT,
    CertificateAuthority,
    ServerProcess,
    eventually,
    fails_with_one_line,
    free_port,
    health,
    open_channel,
    running_server,
    service_token,
    stubs,
)

BY_STUB = {
    "users": "buildplatform.v1.UserService",
    "projects": "buildplatform.v1.ProjectService",
    "builds": "buildplatform.v1.BuildService",
    "logs": "buildplatform.v1.BuildLogService",
}
SERVICE: dict[str, ServiceDescriptor] = {service.full_name: service for service, _ in SERVICES}
MISSING_ID = "c" + "0" * 24   # a well-formed CUID of nothing


def _details(outcome: Outcome) -> list[tuple[str, dict[str, Any]]]:
    """The google.rpc details, unpacked (a map's wire order is not part of the answer)."""
    found = []
    for detail in outcome.details:
        name = detail.type_url.rsplit("/", 1)[-1]
        message = getattr(error_details_pb2, name.rsplit(".", 1)[-1])()
        assert detail.Unpack(message), detail.type_url
        found.append((name, json_format.MessageToDict(message)))
    return found


@pytest.fixture(scope="module")
def tokens(server: ServerProcess) -> dict[str, str]:
    return {"admin": server.token, "read": service_token(server.database_url, ["read"]), "none": "",
            "unknown": "bps_" + "x" * 43}


@pytest.fixture(scope="module")
def grpc_apis(server: ServerProcess, tokens: dict[str, str]) -> Iterator[dict[str, SimpleNamespace]]:
    channels = {who: open_channel(server.address, token=token or None) for who, token in tokens.items()}
    yield {who: stubs(channel) for who, channel in channels.items()}
    for channel in channels.values():
        channel.close()


def call_grpc(apis: dict[str, SimpleNamespace], who: str, stub: str, method: str, request: Any) -> Outcome:
    try:
        return Outcome(messages=[getattr(getattr(apis[who], stub), method)(request, timeout=30)])
    except grpc.RpcError as error:
        return grpc_outcome(error)


def call_http(server: ServerProcess, token: str, stub: str, method: str, request: Any, codec: str) -> Outcome:
    service = SERVICE[BY_STUB[stub]]
    output = message_factory.GetMessageClass(service.methods_by_name[method].output_type)
    return server.http(token).unary(f"{service.full_name}/{method}", request, output, codec=codec)


def same_answer(by_grpc: Outcome, by_http: Outcome) -> None:
    assert (by_http.code, by_http.message) == (by_grpc.code, by_grpc.message)
    assert _details(by_http) == _details(by_grpc)
    assert by_http.messages == by_grpc.messages


# (case, stub, method, who calls, the request from the fixtures, the gRPC status it must be)
CASES: list[tuple[str, str, str, str, Callable[[SimpleNamespace], Any], str]] = [
    ("get a build", "builds", "GetBuild", "admin", lambda f: build_pb2.GetBuildRequest(id=f.build.id), "OK"),
    ("list a user's builds", "builds", "ListBuilds", "admin",
     lambda f: build_pb2.ListBuildsRequest(user_id=f.user.id), "OK"),
    ("get a user", "users", "GetUser", "read", lambda f: user_pb2.GetUserRequest(id=f.user.id), "OK"),
    ("get a project", "projects", "GetProject", "admin", lambda f: project_pb2.GetProjectRequest(id=f.project.id), "OK"),
    ("list a user's projects", "projects", "ListProjects", "admin",
     lambda f: project_pb2.ListProjectsRequest(user_id=f.user.id), "OK"),
    ("read a build's log", "logs", "ListBuildLogs", "admin", lambda f: L.ListBuildLogsRequest(build_id=f.build.id), "OK"),
    ("a build that does not exist", "builds", "GetBuild", "admin", lambda f: build_pb2.GetBuildRequest(id=MISSING_ID),
     "NOT_FOUND"),
    ("a malformed id", "builds", "GetBuild", "admin", lambda f: build_pb2.GetBuildRequest(id="nope"), "INVALID_ARGUMENT"),
    ("a build missing several fields", "builds", "CreateBuild", "admin",
     lambda f: build_pb2.CreateBuildRequest(build=build_pb2.Build(user_id=f.user.id, sandbox_id="x" * 1000)),
     "INVALID_ARGUMENT"),
    ("an update mask naming an unknown field", "builds", "UpdateBuild", "admin",
     lambda f: build_pb2.UpdateBuildRequest(build=build_pb2.Build(id=f.build.id),
                                            update_mask=field_mask_pb2.FieldMask(paths=["colour"])),
     "INVALID_ARGUMENT"),
    ("a move the status machine refuses", "builds", "TransitionBuild", "admin",
     lambda f: build_pb2.TransitionBuildRequest(id=f.build.id, status=build_pb2.BUILD_STATUS_COMPLETED),
     "FAILED_PRECONDITION"),
    ("a clerk id that is taken", "users", "CreateUser", "admin",
     lambda f: user_pb2.CreateUserRequest(user=user_pb2.User(clerk_id=f.user.clerk_id, email="b@example.com")),
     "ALREADY_EXISTS"),
    ("no token", "builds", "GetBuild", "none", lambda f: build_pb2.GetBuildRequest(id=f.build.id), "UNAUTHENTICATED"),
    ("an unknown token", "builds", "GetBuild", "unknown", lambda f: build_pb2.GetBuildRequest(id=f.build.id),
     "UNAUTHENTICATED"),
    ("a read-only token updating", "builds", "UpdateBuild", "read",
     lambda f: build_pb2.UpdateBuildRequest(build=build_pb2.Build(id=f.build.id, sandbox_id="sb-1"),
                                            update_mask=field_mask_pb2.FieldMask(paths=["sandbox_id"])),
     "PERMISSION_DENIED"),
    ("a read-only token deleting", "builds", "DeleteBuild", "read", lambda f: build_pb2.DeleteBuildRequest(id=f.build.id),
     "PERMISSION_DENIED"),
]


@pytest.mark.parametrize("codec", ["json", "proto"])
@pytest.mark.parametrize(("case", "stub", "method", "who", "request_of", "code"), CASES, ids=[c[0] for c in CASES])
def test_both_transports_answer_the_same(
    server, grpc_apis, tokens, user, project, build, codec, case, stub, method, who, request_of, code
):
    fixtures = SimpleNamespace(user=user, project=project, build=build)
    request = request_of(fixtures)
    by_grpc = call_grpc(grpc_apis, who, stub, method, request)
    by_http = call_http(server, tokens[who], stub, method, request, codec)
    assert by_grpc.code == code, by_grpc
    same_answer(by_grpc, by_http)
    if code != "OK":
        assert by_grpc.details, "every refusal carries google.rpc details"


def test_a_refusal_is_an_http_status_and_a_connect_error(server, build):
    """What curl shows: the HTTP status of the Connect code, a JSON error body, the request id."""
    got = server.http("").unary("buildplatform.v1.BuildService/GetBuild", build_pb2.GetBuildRequest(id=build.id),
                                build_pb2.GetBuildResponse, headers={"x-request-id": "req-42"})
    assert (got.http_status, got.code) == (401, "UNAUTHENTICATED")
    assert got.headers["content-type"] == "application/json"
    assert got.headers["x-request-id"] == "req-42"
    # The access log line is written as the call ends, and read from the server's stderr by a thread.
    eventually(lambda: "req-42" in server.log(), "the access log line of the refused call")
    assert '"transport": "http"' in server.log()


def test_writes_over_http_are_what_grpc_reads_back(server, api, user, project):
    http = server.http()
    created = http.unary("buildplatform.v1.BuildService/CreateBuild", build_pb2.CreateBuildRequest(
        build=build_pb2.Build(user_id=user.id, project_id=project.id, app_spec="# Todo")), build_pb2.CreateBuildResponse)
    build_id = created.response.build.id
    assert api.builds.GetBuild(build_pb2.GetBuildRequest(id=build_id)).build == created.response.build

    updated = http.unary("buildplatform.v1.BuildService/UpdateBuild", build_pb2.UpdateBuildRequest(
        build=build_pb2.Build(id=build_id, output_url="https://todo.example.com"),
        update_mask=field_mask_pb2.FieldMask(paths=["output_url"])), build_pb2.UpdateBuildResponse, codec="proto")
    assert updated.response.build.output_url == "https://todo.example.com"
    assert api.builds.GetBuild(build_pb2.GetBuildRequest(id=build_id)).build == updated.response.build

    deleted = http.unary("buildplatform.v1.BuildService/DeleteBuild", build_pb2.DeleteBuildRequest(id=build_id),
                         build_pb2.DeleteBuildResponse)
    assert deleted.code == "OK"
    with pytest.raises(grpc.RpcError) as gone:
        api.builds.GetBuild(build_pb2.GetBuildRequest(id=build_id))
    by_http = http.unary("buildplatform.v1.BuildService/GetBuild", build_pb2.GetBuildRequest(id=build_id),
                         build_pb2.GetBuildResponse)
    same_answer(grpc_outcome(gone.value), by_http)


def test_the_curl_example_runs_verbatim(server, build, tmp_path):
    """docs/clients.md's curl block, with only the address and the token file changed."""
    if shutil.which("curl") is None:
        pytest.skip("no curl on this machine")
    doc = (ROOT / "docs" / "clients.md").read_text()
    script = doc.split("<!-- curl-example:start -->")[1].split("<!-- curl-example:end -->")[0]
    script = script.split("```sh\n", 1)[1].rsplit("```", 1)[0]
    token_file = tmp_path / "admin-token"
    token_file.write_text(server.token + "\n")
    address = f"127.0.0.1:{server.http_port}"
    script = script.replace("127.0.0.1:8080", address).replace(".data/admin-token", str(token_file))
    assert "curl -H 'content-type: application/json' -H \"authorization: Bearer $(cat " in script
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=ROOT, capture_output=True, text=True,
                            timeout=60, env={"PATH": "/usr/bin:/bin", "BUILD_ID": build.id})
    assert result.returncode == 0, result.stdout + result.stderr
    answers = [line for line in result.stdout.splitlines() if line.startswith("{")]
    got = json_format.Parse(answers[0], build_pb2.GetBuildResponse())
    assert got.build.id == build.id
    assert '"code": "not_found"' in answers[1] and "google.rpc.ResourceInfo" in answers[1]


def test_buf_curl_follows_a_build_over_connect(server, api, build):
    """docs/clients.md's `buf curl` line: a server stream over HTTP/1.1, JSON."""
    start_running(api, build.id)
    append(api, build.id, lines("npm install", "added 312 packages"))
    finish(api, build.id)
    buf = ROOT / ".venv" / "bin" / "buf"
    result = subprocess.run(
        [str(buf), "curl", "--schema", str(ROOT / "generated" / "buildplatform.binpb"),
         "-H", f"authorization: Bearer {server.token}", "--data", f'{{"build_id": "{build.id}", "follow": true}}',
         f"http://127.0.0.1:{server.http_port}/buildplatform.v1.BuildLogService/StreamBuildLogs"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert '"message": "added 312 packages"' in result.stdout and '"caughtUp": true' in result.stdout


# --- server streams over HTTP/1.1 -------------------------------------------------------

FOLLOWERS = [("connect", "json"), ("connect", "proto"), ("grpc-web", "proto")]


def test_followers_over_http_get_every_line_once_in_order_until_the_build_ends(server, api, build):
    """StreamBuildLogs with follow over Connect (JSON, binary) and gRPC-Web,
    each on an HTTP/1.1 connection of its own, while lines are appended over
    gRPC: every line exactly once, in order, and the streams end when the build does."""
    start_running(api, build.id)
    http = server.http()
    streams = {
        (protocol, codec): http.open_stream(
            "buildplatform.v1.BuildLogService/StreamBuildLogs", L.StreamBuildLogsRequest(build_id=build.id, follow=True),
            L.StreamBuildLogsResponse, protocol=protocol, codec=codec, timeout=60)
        for protocol, codec in FOLLOWERS
    }
    received: dict[tuple[str, str], list[L.StreamBuildLogsResponse]] = {key: [] for key in streams}
    caught_up = {key: threading.Event() for key in streams}

    def read(key: tuple[str, str]) -> None:
        for message in streams[key].messages():
            received[key].append(message)
            if message.caught_up:
                caught_up[key].set()

    readers = [threading.Thread(target=read, args=(key,)) for key in streams]
    for reader in readers:
        reader.start()
    for key, event in caught_up.items():
        assert event.wait(30), f"{key} never caught up"
    for batch in range(20):
        append(api, build.id, lines(*[f"{batch}.{i}" for i in range(10)]))
    finish(api, build.id)
    for reader in readers:
        reader.join(60)
    expected = [f"{batch}.{i}" for batch in range(20) for i in range(10)]
    for key, stream in streams.items():
        assert stream.outcome.code == "OK", (key, stream.outcome)
        logs = [log for response in received[key] for log in response.logs]
        assert [log.message for log in logs] == expected, key
        assert [log.sequence for log in logs] == list(range(1, 201)), key
        stream.close()
    assert streams["connect", "json"].headers["content-type"] == "application/connect+json"
    assert streams["grpc-web", "proto"].headers["content-type"] == "application/grpc-web+proto"


def test_a_stream_refused_over_grpc_web_carries_the_same_status(server, grpc_apis, tokens):
    request = L.StreamBuildLogsRequest(build_id=MISSING_ID)
    with pytest.raises(grpc.RpcError) as refused:
        list(grpc_apis["admin"].logs.StreamBuildLogs(request, timeout=30))
    for protocol, codec in FOLLOWERS:
        by_http = server.http().stream("buildplatform.v1.BuildLogService/StreamBuildLogs", request,
                                       L.StreamBuildLogsResponse, protocol=protocol, codec=codec)
        same_answer(grpc_outcome(refused.value), by_http)


def test_shutdown_ends_http_followers_with_unavailable_and_the_resume_cursor(api, database_url, build):
    start_running(api, build.id)
    append(api, build.id, lines("one", "two"))
    with running_server(database_url, SHUTDOWN_GRACE_SECONDS="30") as proc:
        followers = [
            proc.http().open_stream("buildplatform.v1.BuildLogService/StreamBuildLogs",
                                    L.StreamBuildLogsRequest(build_id=build.id, follow=True),
                                    L.StreamBuildLogsResponse, protocol=protocol, codec=codec, timeout=60)
            for protocol, codec in FOLLOWERS
        ]
        for follower in followers:
            first = next(iter(follower.messages()))
            assert first.cursor == 2 and first.caught_up
        proc.proc.terminate()
        for follower in followers:
            assert list(follower.messages()) == []
            assert follower.outcome.code == "UNAVAILABLE", follower.outcome
            assert "after_sequence=2" in follower.outcome.message
            follower.close()
    assert '"code": "UNAVAILABLE"' in proc.log()


def test_a_deadline_sent_over_http_ends_a_follow(server, api, build):
    """connect-timeout-ms (Connect) and grpc-timeout (gRPC-Web) are the call's deadline."""
    start_running(api, build.id)
    request = L.StreamBuildLogsRequest(build_id=build.id, follow=True)
    for protocol, codec in FOLLOWERS:
        header = {"connect-timeout-ms": "300"} if protocol == "connect" else {"grpc-timeout": "300m"}
        got = server.http().stream("buildplatform.v1.BuildLogService/StreamBuildLogs", request,
                                   L.StreamBuildLogsResponse, protocol=protocol, codec=codec, headers=header)
        assert got.code == "DEADLINE_EXCEEDED", (protocol, got)
        assert got.messages and got.messages[0].caught_up


def test_both_ports_share_one_stream_limit_and_a_closed_connection_frees_its_slot(api, database_url, build):
    """MAX_STREAMS counts gRPC and HTTP streams together; an HTTP follower
    whose connection closes gives its slot back at once."""
    start_running(api, build.id)
    request = L.StreamBuildLogsRequest(build_id=build.id, follow=True)
    path = "buildplatform.v1.BuildLogService/StreamBuildLogs"
    with running_server(database_url, MAX_STREAMS="1") as proc, proc.channel() as channel:
        over_grpc = stubs(channel).logs.StreamBuildLogs(request, timeout=60)
        assert next(over_grpc).caught_up
        refused = proc.http().stream(path, request, L.StreamBuildLogsResponse)
        assert refused.code == "RESOURCE_EXHAUSTED" and "MAX_STREAMS" in refused.message
        over_grpc.cancel()
        follower = None
        for _ in range(100):   # the cancelled gRPC stream leaves within moments
            follower = proc.http().open_stream(path, request, L.StreamBuildLogsResponse)
            first = next(iter(follower.messages()), None)
            if first is not None:
                break
            follower.close()
            time.sleep(0.05)
        assert follower is not None and first is not None and first.caught_up
        follower.close()
        for _ in range(100):
            try:
                assert next(stubs(channel).logs.StreamBuildLogs(request, timeout=60)).caught_up
                break
            except grpc.RpcError as error:
                assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                time.sleep(0.05)
        else:
            raise AssertionError("the closed HTTP follower kept its slot")
    assert '"code": "CANCELLED"' in proc.log() and '"transport": "http"' in proc.log()


# --- what is not an RPC --------------------------------------------------------------------


def test_health_and_readiness_answer_without_a_token(server):
    http = server.http("")
    assert http.request("GET", "/healthz")[::2] == (200, b"ok\n")
    assert http.request("GET", "/readyz")[::2] == (200, b"ready\n")
    assert http.request("GET", "/no-such-page")[0] == 404


def test_readyz_is_503_while_the_database_cannot_be_reached(tmp_path):
    unreachable = f"postgresql://postgres@127.0.0.1:{free_port()}/nothing"
    proc = ServerProcess(unreachable).start()
    try:
        status, _, body = proc.http("").request("GET", "/readyz")
        assert status == 503 and body.startswith(b"not ready: ")
        assert proc.http("").request("GET", "/healthz")[0] == 200
    finally:
        proc.stop()


def test_a_cors_preflight_is_answered_for_an_allowed_origin_without_a_token(server):
    status, headers, _ = server.http("").request("OPTIONS", "/buildplatform.v1.BuildService/GetBuild", headers={
        "origin": ORIGIN, "access-control-request-method": "POST",
        "access-control-request-headers": "authorization, content-type, connect-protocol-version",
    })
    assert status == 204
    assert headers["access-control-allow-origin"] == ORIGIN
    allowed = {name.strip() for name in headers["access-control-allow-headers"].split(",")}
    assert {"authorization", "content-type", "connect-protocol-version", "connect-timeout-ms", "grpc-timeout",
            "x-grpc-web", "x-user-agent", "x-request-id"} <= allowed
    assert "POST" in headers["access-control-allow-methods"]


def test_an_allowed_origin_may_read_the_answer_and_its_status_headers(server, build):
    got = server.http().unary("buildplatform.v1.BuildService/GetBuild", build_pb2.GetBuildRequest(id=build.id),
                              build_pb2.GetBuildResponse, headers={"origin": ORIGIN})
    assert got.code == "OK" and got.headers["access-control-allow-origin"] == ORIGIN
    exposed = {name.strip() for name in got.headers["access-control-expose-headers"].split(",")}
    assert {"grpc-status", "grpc-message", "grpc-status-details-bin", "x-request-id"} <= exposed


def test_another_origin_gets_no_cors_headers(server, build):
    other = "https://evil.example.test"
    _, preflight, _ = server.http("").request("OPTIONS", "/buildplatform.v1.BuildService/GetBuild", headers={
        "origin": other, "access-control-request-method": "POST"})
    got = server.http().unary("buildplatform.v1.BuildService/GetBuild", build_pb2.GetBuildRequest(id=build.id),
                              build_pb2.GetBuildResponse, headers={"origin": other})
    for headers in (preflight, got.headers):
        assert not [name for name in headers if name.startswith("access-control-allow")], headers


def curl(server: ServerProcess, path: str, *args: str) -> tuple[int, dict[str, str], dict[str, Any]]:
    """curl against the HTTP port with the admin token: the status, the headers and the JSON body."""
    done = subprocess.run(
        ["curl", "-sS", "-i", "-H", f"authorization: Bearer {server.token}", *args,
         f"http://127.0.0.1:{server.http_port}{path}"],
        capture_output=True, text=True, timeout=30, check=True,
    )
    head, _, body = done.stdout.partition("\n\n")   # text mode: curl's CRLF is read as LF
    status = int(head.split()[1])
    headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in head.splitlines()[1:])}
    return status, headers, json.loads(body)


def test_grpc_is_pointed_to_its_own_port(server):
    status, headers, body = curl(server, "/buildplatform.v1.BuildService/GetBuild", "-H",
                                 "content-type: application/grpc", "--data-binary", "")
    assert status == 415 and headers["content-type"] == "application/json"
    assert body["code"] == "invalid_argument" and "GRPC_ADDRESS" in body["message"], body


@pytest.mark.parametrize(("args", "status", "code", "said"), [
    # A plain JSON POST to a server stream: Connect streams are enveloped.
    (["-H", "content-type: application/json", "-d", "{}"], 415, "invalid_argument",
     "'application/json' is not accepted by buildplatform.v1.BuildLogService/StreamBuildLogs: "
     "it is a server stream: POST with content-type: application/connect+json"),
    # No content type at all (curl -d sends form encoding unless told; --data-binary with none).
    (["-H", "content-type:", "--data-binary", "{}"], 415, "invalid_argument",
     "no content-type is not accepted by buildplatform.v1.BuildLogService/StreamBuildLogs"),
    # A GET on an RPC's path.
    ([], 405, "unimplemented", "GET is not served on buildplatform.v1.BuildLogService/StreamBuildLogs: "),
], ids=["JSON POST to a stream", "no content type", "GET"])
def test_a_request_connect_cannot_take_is_a_json_error_saying_what_to_send(server, args, status, code, said):
    got, headers, body = curl(server, "/buildplatform.v1.BuildLogService/StreamBuildLogs", *args)
    assert (got, headers["content-type"]) == (status, "application/json"), body
    assert body["code"] == code and said in body["message"] and "docs/http.md" in body["message"], body
    if status == 415:   # what the stream takes, not the unary content types
        assert headers["accept-post"].startswith("application/connect+json"), headers


@pytest.mark.parametrize(("args", "status", "said"), [
    (["--data-binary", "{}", "-H", "content-type:"], 415,
     "no content-type is not accepted by buildplatform.v1.BuildService/GetBuild: POST the request as JSON "
     "with content-type: application/json"),
    (["-H", "content-type: text/plain", "-d", "{}"], 415, "content-type 'text/plain' is not accepted"),
    ([], 405, "GET is not served on buildplatform.v1.BuildService/GetBuild: POST the request as JSON"),
], ids=["no content type", "text/plain", "GET"])
def test_a_unary_call_connect_cannot_take_says_to_post_json(server, args, status, said):
    got, headers, body = curl(server, "/buildplatform.v1.BuildService/GetBuild", *args)
    assert (got, headers["content-type"]) == (status, "application/json"), body
    assert said in body["message"], body


def test_a_post_to_a_path_that_is_no_rpc_names_the_form_of_one(server):
    got, _, body = curl(server, "/buildplatform.v1.BuildService/NoSuchMethod", "-H",
                        "content-type: application/json", "-d", "{}")
    assert got == 404 and body["code"] == "unimplemented", body
    assert "/buildplatform.v1.BuildService/GetBuild" in body["message"], body


# --- settings ---------------------------------------------------------------------------------


def test_an_empty_http_address_serves_no_http(database_url):
    with running_server(database_url, HTTP_ADDRESS="") as proc:
        assert proc.http_port == 0 and "for HTTP" not in proc.log()
        assert health(proc.address) == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.parametrize(("address", "says"), [
    ("nonsense", "HTTP_ADDRESS='nonsense' must be host:port"),
    ("0.0.0.0:0", "HTTP_ADDRESS='0.0.0.0:0' would serve plaintext beyond this machine"),
    ("192.0.2.1:8080", "192.0.2.1 is not an address of this machine; fix HTTP_ADDRESS"),
])
def test_a_bad_http_address_is_one_line_at_start(database_url, address, says):
    env = {"DATABASE_URL": database_url, "HTTP_ADDRESS": address}
    if address.startswith("192."):
        env["ALLOW_PLAINTEXT"] = "true"
    assert says in fails_with_one_line(env)


def test_an_http_port_in_use_is_one_line_at_start(server, database_url):
    line = fails_with_one_line({"DATABASE_URL": database_url, "HTTP_ADDRESS": f"127.0.0.1:{server.http_port}"})
    assert "the port is in use" in line and "HTTP_ADDRESS" in line


# --- TLS ----------------------------------------------------------------------------------------


def _trusting(ca: CertificateAuthority) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca.ca_file))
    return context


def test_the_http_port_serves_tls_with_the_grpc_ports_certificate(tls_server, ca, build):
    http = tls_server.http(context=_trusting(ca))
    assert http.request("GET", "/healthz")[0] == 200
    got = http.unary("buildplatform.v1.BuildService/GetBuild", build_pb2.GetBuildRequest(id=build.id),
                     build_pb2.GetBuildResponse)
    assert got.response.build.id == build.id
    with pytest.raises(ssl.SSLError):
        HttpClient(tls_server.http_port, context=ssl.create_default_context()).request("GET", "/healthz")


def test_certificates_replaced_on_disk_reach_new_http_connections(database_url, certs):
    first_ca, second_ca = CertificateAuthority(certs, "http-first"), CertificateAuthority(certs, "http-second")
    served = first_ca.server("http-rotating")
    env = {"TLS_CERT_FILE": str(served.cert_file), "TLS_KEY_FILE": str(served.key_file)}
    with running_server(database_url, credentials=first_ca.credentials(), **env) as proc:
        assert proc.http(context=_trusting(first_ca)).request("GET", "/healthz")[0] == 200
        renewed = second_ca.server("http-renewed")
        served.key_file.write_bytes(renewed.key_file.read_bytes())
        served.cert_file.write_bytes(renewed.cert_file.read_bytes())
        assert proc.http(context=_trusting(second_ca)).request("GET", "/healthz")[0] == 200
        with pytest.raises(ssl.SSLError):
            proc.http(context=_trusting(first_ca)).request("GET", "/healthz")
