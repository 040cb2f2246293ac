"""A build's log as text: GET /builds/{id}/logs.txt (curl is the client) and
ReadBuildLogText (the generated stub), the same bytes, with Range, gzip,
ANSI stripping, prefixes, resumes and the refusals."""

from __future__ import annotations

import gzip
import json
import re
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import grpc
import psycopg
import pytest
from buildplatform.v1 import build_log_pb2 as L
from buildplatform.v1 import build_pb2, project_pb2, user_pb2
from google.protobuf import struct_pb2

from server import migrate
from tests.auth_support import ORIGIN
from tests.e2e.streaming import (
    ERROR,
    INFO,
    TOOL,
    WARN,
    append,
    finish,
    lines,
    start_running,
    violations,
)
from tests.support import (
    ServerProcess,
    create_database,
    drop_database,
    eventually,
    running_server,
    stubs,
)

MISSING = "c" + "0" * 24

# Real escape sequences, as compilers, test runners and terminals write them.
RED, BOLD_GREEN, RESET = "\x1b[31m", "\x1b[1;32m", "\x1b[0m"
MESSAGES = [
    (INFO, f"{BOLD_GREEN}Compiling{RESET} app v0.1.0 (/work/app)"),
    (WARN, f"{RED}warning{RESET}: unused variable `x` \u2014 caf\u00e9 \U0001f680"),
    (TOOL, "\x1b]0;npm test\x07\x1b[?25l\x1b[2K\rprogress 50%\x1b[?25h"),
    (ERROR, "see \x1b]8;;https://example.com/e1\x1b\\the docs\x1b]8;;\x1b\\ \x1b(Bhere\x1b7\x1b8"),
    (INFO, "a message\nof two lines"),
    (INFO, "tab\there, bell\x07 kept"),
    (INFO, "\x9b1mC1 CSI\x9bm and \x9d0;t\x9c OSC"),
]
# The same messages with their escape sequences removed, written by hand.
STRIPPED = [
    "Compiling app v0.1.0 (/work/app)",
    "warning: unused variable `x` \u2014 caf\u00e9 \U0001f680",
    "\rprogress 50%",
    "see the docs here",
    "a message\nof two lines",
    "tab\there, bell\x07 kept",
    "C1 CSI and  OSC",
]
LEVELS = {INFO: "INFO  ", WARN: "WARN  ", ERROR: "ERROR ", TOOL: "TOOL  "}


def curl(server: ServerProcess, path: str, *args: str, token: str | None = None) -> tuple[int, dict[str, str], bytes]:
    """curl's answer to GET `path` on the HTTP port: status, headers (lowercase), body."""
    token = server.token if token is None else token
    auth = ["-H", f"Authorization: Bearer {token}"] if token else []
    done = subprocess.run(
        ["curl", "-sS", "--max-time", "60", "-D", "/dev/stderr", "-o", "-", *auth, *args,
         f"http://127.0.0.1:{server.http_port}{path}"],
        capture_output=True, timeout=90, check=True,
    )
    blocks = [b for b in done.stderr.decode("latin-1").split("\r\n\r\n") if b.startswith("HTTP/")]
    head = blocks[-1].split("\r\n")
    status = int(head[0].split()[1])
    headers = {}
    for line in head[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, done.stdout


def new_user(api: SimpleNamespace) -> user_pb2.User:
    clerk = f"user_{uuid.uuid4().hex[:12]}"
    return api.users.CreateUser(
        user_pb2.CreateUserRequest(user=user_pb2.User(clerk_id=clerk, email=f"{clerk}@example.com"))
    ).user


def read_text(api: SimpleNamespace, build_id: str, **fields: Any) -> list[L.ReadBuildLogTextResponse]:
    options = fields.pop("options", None)
    request = L.ReadBuildLogTextRequest(build_id=build_id, **fields)
    if options is not None:
        request.options.CopyFrom(options)
    return list(api.logs.ReadBuildLogText(request, timeout=60))


def joined(responses: list[L.ReadBuildLogTextResponse]) -> bytes:
    return b"".join(r.data for r in responses)


@pytest.fixture(scope="module")
def finished(server: ServerProcess) -> Iterator[tuple[str, SimpleNamespace]]:
    """A finished build holding MESSAGES and one line of metadata only."""
    with server.channel() as channel:
        api = stubs(channel)
        user = new_user(api)
        project = api.projects.CreateProject(project_pb2.CreateProjectRequest(
            project=project_pb2.Project(user_id=user.id, name="download"))).project
        build = api.builds.CreateBuild(build_pb2.CreateBuildRequest(
            build=build_pb2.Build(user_id=user.id, project_id=project.id, app_spec="# download"))).build
        append(api, build.id, [L.LogEntry(level=level, message=message) for level, message in MESSAGES])
        metadata = struct_pb2.Struct()
        metadata.update({"step": "only metadata"})
        append(api, build.id, [L.LogEntry(level=INFO, metadata=metadata)])
        finish(api, build.id)
        yield build.id, SimpleNamespace(api=api, user=user)


def expected(*, strip: bool = False) -> bytes:
    texts = STRIPPED if strip else [message for _, message in MESSAGES]
    return "".join(text + "\n" for text in [*texts, ""]).encode()


def test_curl_gets_the_whole_log_one_line_per_entry(server, finished):
    build_id, _ = finished
    status, headers, body = curl(server, f"/builds/{build_id}/logs.txt")
    assert status == 200
    assert headers["content-type"] == "text/plain; charset=utf-8"
    assert headers["accept-ranges"] == "bytes"
    assert "accept-encoding" in headers["vary"].lower()
    assert body == expected()
    # A message's own line break stays; the metadata-only entry is an empty line.
    assert body.decode().split("\n")[4:7] == ["a message", "of two lines", "tab\there, bell\x07 kept"]
    assert body.endswith(b"\n\n")


def test_ansi_strip_removes_every_escape_sequence_and_nothing_else(server, finished):
    build_id, _ = finished
    status, _, body = curl(server, f"/builds/{build_id}/logs.txt?ansi=strip")
    assert status == 200
    assert body == expected(strip=True)
    assert b"\x1b" not in body and "\x9b".encode() not in body


def test_timestamps_and_levels_prefix_each_entry(server, finished):
    build_id, fixture = finished
    logs = fixture.api.logs.ListBuildLogs(L.ListBuildLogsRequest(build_id=build_id)).logs
    status, _, body = curl(server, f"/builds/{build_id}/logs.txt?timestamps=true&levels=true&ansi=strip")
    assert status == 200
    want = "".join(
        f"{log.create_time.ToDatetime().strftime('%Y-%m-%dT%H:%M:%S.%fZ')} {LEVELS[log.level]}{text}\n"
        for log, text in zip(logs, [*STRIPPED, ""], strict=True)
    )
    assert body.decode() == want
    assert re.match(rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z INFO  Compiling", body)
    _, _, levels_only = curl(server, f"/builds/{build_id}/logs.txt?levels=1")
    assert levels_only.split(b"\n")[1].startswith(b"WARN  \x1b[31mwarning")


def test_range_requests_answer_206_with_content_range(server, finished):
    build_id, _ = finished
    whole = expected()
    path = f"/builds/{build_id}/logs.txt"
    status, headers, body = curl(server, path, "-r", "10-19")
    assert (status, body) == (206, whole[10:20])
    assert headers["content-range"] == f"bytes 10-19/{len(whole)}"
    assert headers["content-length"] == "10"
    status, headers, body = curl(server, path, "-r", "100-")
    assert (status, body) == (206, whole[100:])
    assert headers["content-range"] == f"bytes 100-{len(whole) - 1}/{len(whole)}"
    status, headers, body = curl(server, path, "-r", "-7")
    assert (status, body) == (206, whole[-7:])
    assert headers["content-range"] == f"bytes {len(whole) - 7}-{len(whole) - 1}/{len(whole)}"
    status, headers, body = curl(server, path, "-r", f"0-{len(whole) + 50}")
    assert (status, body) == (206, whole)


def test_a_range_past_the_end_is_416_with_the_length(server, finished):
    build_id, _ = finished
    length = len(expected())
    status, headers, body = curl(server, f"/builds/{build_id}/logs.txt", "-r", f"{length}-")
    assert status == 416
    assert headers["content-range"] == f"bytes */{length}"
    assert json.loads(body)["code"] == "out_of_range"


def test_curl_resumes_a_download_with_c(server, finished, tmp_path):
    build_id, _ = finished
    whole = expected()
    partial = tmp_path / "log.txt"
    partial.write_bytes(whole[:33])
    subprocess.run(
        ["curl", "-sS", "-f", "-C", "-", "-o", str(partial), "-H", f"Authorization: Bearer {server.token}",
         f"http://127.0.0.1:{server.http_port}/builds/{build_id}/logs.txt"],
        check=True, timeout=60,
    )
    assert partial.read_bytes() == whole


def test_gzip_when_the_client_accepts_it(server, finished):
    build_id, _ = finished
    status, headers, body = curl(server, f"/builds/{build_id}/logs.txt", "-H", "Accept-Encoding: gzip")
    assert status == 200 and headers["content-encoding"] == "gzip"
    assert gzip.decompress(body) == expected()
    status, headers, body = curl(server, f"/builds/{build_id}/logs.txt?ansi=strip", "--compressed")
    assert status == 200 and headers["content-encoding"] == "gzip"
    assert body == expected(strip=True)    # curl decompressed it
    _, plain, _ = curl(server, f"/builds/{build_id}/logs.txt")
    assert "content-encoding" not in plain


def test_download_names_the_file(server, finished):
    build_id, _ = finished
    _, headers, _ = curl(server, f"/builds/{build_id}/logs.txt?download=1")
    assert headers["content-disposition"] == f'attachment; filename="{build_id}.log"'


def test_the_rpc_returns_the_same_bytes_as_http(server, finished):
    build_id, fixture = finished
    for query, options in (
        ("", L.LogTextOptions()),
        ("?ansi=strip&timestamps=true&levels=true",
         L.LogTextOptions(ansi=L.ANSI_MODE_STRIP, timestamps=True, levels=True)),
    ):
        _, _, body = curl(server, f"/builds/{build_id}/logs.txt{query}")
        responses = read_text(fixture.api, build_id, options=options)
        assert joined(responses) == body
        assert responses[0].offset == 0


@pytest.fixture(scope="module")
def long_build(server: ServerProcess, finished) -> str:
    """A finished build whose text spans several chunks (about 1.3 MB)."""
    _, fixture = finished
    api = fixture.api
    build = api.builds.CreateBuild(build_pb2.CreateBuildRequest(build=build_pb2.Build(
        user_id=fixture.user.id,
        project_id=api.builds.GetBuild(build_pb2.GetBuildRequest(id=finished[0])).build.project_id,
        app_spec="# long"))).build
    for batch in range(3):
        append(api, build.id, lines(*(f"{RED}line {batch}-{i}{RESET} " + "x" * (150 + i % 97) for i in range(3000))))
    finish(api, build.id)
    return str(build.id)


def test_read_offset_resumes_exactly_where_a_read_stopped(server, finished, long_build):
    _, fixture = finished
    _, _, http = curl(server, f"/builds/{long_build}/logs.txt?ansi=strip")
    options = L.LogTextOptions(ansi=L.ANSI_MODE_STRIP)
    whole = read_text(fixture.api, long_build, options=options)
    assert len(whole) > 2
    assert joined(whole) == http
    # Each chunk says where it starts: the offsets chain.
    offset = 0
    for response in whole:
        assert response.offset == offset and 0 < len(response.data) <= 1 << 20
        offset += len(response.data)
    # A read cut after its first chunk, resumed from where it stopped.
    stream = fixture.api.logs.ReadBuildLogText(
        L.ReadBuildLogTextRequest(build_id=long_build, options=options), timeout=60)
    first = next(stream)
    stream.cancel()
    resume = first.offset + len(first.data)
    rest = read_text(fixture.api, long_build, read_offset=resume, options=options)
    assert rest[0].offset == resume
    assert first.data + joined(rest) == http
    # Offsets that fall mid-line and mid-character, and a limit.
    for start in (1, 12_345, len(http) - 3, len(http)):
        assert joined(read_text(fixture.api, long_build, read_offset=start, options=options)) == http[start:]
    window = read_text(fixture.api, long_build, read_offset=500_000, read_limit=300_001, options=options)
    assert joined(window) == http[500_000:800_001]
    # Range over HTTP: the same bytes.
    status, _, body = curl(server, f"/builds/{long_build}/logs.txt?ansi=strip", "-r", "700000-900000")
    assert (status, body) == (206, http[700_000:900_001])


def test_connect_serves_the_rpc_on_the_http_port(server, finished):
    build_id, _ = finished
    outcome = server.http().stream(
        "buildplatform.v1.BuildLogService/ReadBuildLogText", L.ReadBuildLogTextRequest(build_id=build_id, read_offset=5),
        L.ReadBuildLogTextResponse)
    assert outcome.code == "OK"
    assert b"".join(m.data for m in outcome.messages) == expected()[5:]
    assert outcome.messages[0].offset == 5


def test_bad_requests_are_invalid_argument_naming_the_field(server, finished):
    build_id, fixture = finished
    length = len(expected())
    for fields, field in (
        ({"read_offset": -1}, "read_offset"),
        ({"read_limit": -5}, "read_limit"),
        ({"read_offset": length + 1}, "read_offset"),
        ({"options": L.LogTextOptions(ansi=7)}, "options.ansi"),
    ):
        with pytest.raises(grpc.RpcError) as caught:
            read_text(fixture.api, build_id, **fields)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, fields
        assert field in violations(caught.value), (fields, violations(caught.value))
    with pytest.raises(grpc.RpcError) as caught:
        read_text(fixture.api, build_id, read_offset=length + 1)
    assert f"({length} bytes" in caught.value.details()
    assert joined(read_text(fixture.api, build_id, read_offset=length)) == b""
    with pytest.raises(grpc.RpcError) as caught:
        read_text(fixture.api, MISSING)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def test_a_running_build_gives_its_committed_lines_then_more(server, finished):
    _, fixture = finished
    api = fixture.api
    build = api.builds.CreateBuild(build_pb2.CreateBuildRequest(build=build_pb2.Build(
        user_id=fixture.user.id,
        project_id=api.builds.GetBuild(build_pb2.GetBuildRequest(id=finished[0])).build.project_id,
        app_spec="# running"))).build
    start_running(api, build.id)
    append(api, build.id, lines("one", "two"))
    path = f"/builds/{build.id}/logs.txt"
    status, headers, before = curl(server, path)
    assert (status, before) == (200, b"one\ntwo\n")
    assert "etag" not in headers
    status, headers, body = curl(server, path, "-r", "4-")
    assert (status, body) == (206, b"two\n")
    assert headers["content-range"] == "bytes 4-7/*"     # the text grows
    append(api, build.id, lines("three"))
    _, _, after = curl(server, path)
    assert after == before + b"three\n"
    assert joined(read_text(api, build.id, read_offset=len(before))) == b"three\n"
    finish(api, build.id)
    _, headers, _ = curl(server, path, "-r", "0-2")
    assert headers["content-range"] == f"bytes 0-2/{len(after)}"
    assert "etag" in headers


def error_of(body: bytes) -> tuple[str, str]:
    error = json.loads(body)
    return error["code"], error["message"]


def test_refusals_are_json_errors_as_on_every_http_call(server, finished, session_key):
    build_id, fixture = finished
    path = f"/builds/{build_id}/logs.txt"
    status, headers, body = curl(server, path, token="")
    assert status == 401 and headers["content-type"] == "application/json"
    assert error_of(body)[0] == "unauthenticated" and "authorization: Bearer" in error_of(body)[1]
    status, _, body = curl(server, path, token="bp_svc_not-a-token")
    assert status == 401 and error_of(body)[0] == "unauthenticated"
    # A user reads its own build, and not another's.
    owner = session_key.sign(fixture.user.clerk_id)
    status, _, body = curl(server, path, token=owner)
    assert (status, body) == (200, expected())
    stranger = new_user(fixture.api)
    status, _, body = curl(server, path, token=session_key.sign(stranger.clerk_id))
    assert status == 403 and error_of(body)[0] == "permission_denied"
    # An agent reads its build only (tokens are minted for running builds).
    api = fixture.api
    running = api.builds.CreateBuild(build_pb2.CreateBuildRequest(build=build_pb2.Build(
        user_id=fixture.user.id, project_id=api.builds.GetBuild(build_pb2.GetBuildRequest(id=build_id)).build.project_id,
        app_spec="# agent"))).build
    start_running(api, running.id)
    append(api, running.id, lines("from the agent"))
    agent = api.builds.CreateAgentToken(build_pb2.CreateAgentTokenRequest(build_id=running.id)).token
    assert curl(server, f"/builds/{running.id}/logs.txt", token=agent)[1:][1] == b"from the agent\n"
    for other in (build_id, MISSING):
        status, _, body = curl(server, f"/builds/{other}/logs.txt", token=agent)
        assert status == 403 and error_of(body)[0] == "permission_denied"
    # The same answer as the RPC's, code and message.
    status, _, body = curl(server, f"/builds/{MISSING}/logs.txt")
    assert status == 404
    with pytest.raises(grpc.RpcError) as caught:
        read_text(fixture.api, MISSING)
    assert error_of(body) == ("not_found", caught.value.details())
    status, _, body = curl(server, "/builds/not-an-id/logs.txt")
    assert status == 400 and error_of(body)[0] == "invalid_argument"
    status, _, body = curl(server, f"{path}?ansi=bogus&levels=maybe")
    assert status == 400
    code, message = error_of(body)
    assert code == "invalid_argument" and message.startswith("ansi: must be keep or strip") and "1 more" in message


def test_head_answers_the_headers_without_the_text(server, finished):
    build_id, _ = finished
    status, headers, out = curl(server, f"/builds/{build_id}/logs.txt?download=1", "-I")
    assert status == 200
    assert out.startswith(b"HTTP/1.1 200") and b"Compiling" not in out   # curl -I prints the headers, no body came
    assert headers["content-type"] == "text/plain; charset=utf-8"
    assert headers["content-disposition"] == f'attachment; filename="{build_id}.log"'


def _access_lines(server: ServerProcess, request_id: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in server.lines if '"msg": "rpc"' in line and request_id in line]


def test_a_client_that_goes_away_stops_the_render(server, finished):
    """A text far larger than the sockets' buffers, read 1 KiB of and dropped:
    the call ends CANCELLED (the server stopped rendering), not OK."""
    _, fixture = finished
    api = fixture.api
    build = api.builds.CreateBuild(build_pb2.CreateBuildRequest(build=build_pb2.Build(
        user_id=fixture.user.id,
        project_id=api.builds.GetBuild(build_pb2.GetBuildRequest(id=finished[0])).build.project_id,
        app_spec="# dropped"))).build
    for batch in range(3):
        append(api, build.id, lines(*(f"{batch}-{i} " + "y" * 1000 for i in range(5000))))   # 15 MB in all
    request_id = f"dropped-{uuid.uuid4().hex[:8]}"
    with socket.create_connection(("127.0.0.1", server.http_port)) as client:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client.sendall((f"GET /builds/{build.id}/logs.txt HTTP/1.1\r\nHost: x\r\n"
                        f"Authorization: Bearer {server.token}\r\nX-Request-Id: {request_id}\r\n\r\n").encode())
        assert client.recv(1024).startswith(b"HTTP/1.1 200")
        time.sleep(0.5)
    eventually(lambda: bool(_access_lines(server, request_id)), "the call's access log line")
    (line,) = _access_lines(server, request_id)
    assert line["method"] == "/buildplatform.v1.BuildLogService/ReadBuildLogText"
    assert line["transport"] == "http" and line["code"] == "CANCELLED", line


# Each read compared before and after archiving: (query, curl arguments).
READS = [
    ("", ()), ("?ansi=strip&timestamps=true&levels=true", ()), ("?ansi=strip", ("-r", "1000-250000")),
    ("?levels=true", ("-r", "-5000")), ("", ("--compressed",)),
]


def _reads(server: ServerProcess, build_id: str) -> dict[str, Any]:
    """Every read of READS over HTTP, and the RPC's chunks from two offsets."""
    found: dict[str, Any] = {}
    for query, args in READS:
        status, headers, body = curl(server, f"/builds/{build_id}/logs.txt{query}", *args)
        found[f"{query} {args}"] = (status, headers.get("content-range"), headers.get("etag"), body)
    with server.channel() as channel:
        api = stubs(channel)
        for offset in (0, 123_457):
            responses = read_text(api, build_id, read_offset=offset, options=L.LogTextOptions(timestamps=True))
            found[f"rpc {offset}"] = [(r.offset, r.data) for r in responses]
    return found


@pytest.fixture
def own_database(postgres: str) -> Iterator[str]:
    url = create_database(postgres, prefix="bp_download")
    migrate.upgrade(url)
    yield url
    drop_database(postgres, url)


def test_the_same_bytes_before_and_after_archiving(own_database, tmp_path):
    """A finished build's text read hot (ARCHIVE=false), then by a server
    that archives it (the real archiver, to a local directory): every read,
    range and chunk is the same, and the build's state says archived."""
    archive = {"ARCHIVE_URL": str(tmp_path / "archive")}
    with running_server(own_database, ARCHIVE="false", **archive) as hot:
        with hot.channel() as channel:
            api = stubs(channel)
            user = new_user(api)
            project = api.projects.CreateProject(project_pb2.CreateProjectRequest(
                project=project_pb2.Project(user_id=user.id, name="archived"))).project
            build = api.builds.CreateBuild(build_pb2.CreateBuildRequest(
                build=build_pb2.Build(user_id=user.id, project_id=project.id, app_spec="# archived"))).build
            append(api, build.id, [L.LogEntry(level=level, message=message) for level, message in MESSAGES])
            for batch in range(4):   # several chunks of the archive (about 1 MiB of records each)
                append(api, build.id, lines(*(f"{RED}{batch}-{i}{RESET} " + "z" * (200 + i % 50) for i in range(5000)),
                                            level=WARN if batch % 2 else TOOL))
            finish(api, build.id)
        before = _reads(hot, build.id)
    with running_server(own_database, ARCHIVE_AFTER_SECONDS="0", ARCHIVE_INTERVAL_SECONDS="0.2", **archive) as cold:
        def state() -> str:
            with psycopg.connect(own_database) as conn:
                row = conn.execute("SELECT archive_state FROM builds WHERE id = %s", (build.id,)).fetchone()
            return str(row[0]) if row else ""

        eventually(lambda: state() == "archived", "the build to be archived")
        with psycopg.connect(own_database) as conn:
            chunks = conn.execute("SELECT count(*) FROM archive_chunks WHERE build_id = %s AND kind = 'log'",
                                  (build.id,)).fetchone()
        assert chunks is not None and chunks[0] >= 3, chunks
        after = _reads(cold, build.id)
    assert after.keys() == before.keys()
    for key in before:
        assert after[key] == before[key], f"{key}: the archived build reads differently"
    assert before[" ()"][3].startswith(f"{BOLD_GREEN}Compiling".encode())


def test_a_page_of_an_allowed_origin_may_read_ranges_and_the_file_name(server, finished):
    build_id, _ = finished
    status, headers, _ = curl(server, f"/builds/{build_id}/logs.txt?download=1", "-r", "0-4", "-H", f"Origin: {ORIGIN}")
    assert status == 206 and headers["access-control-allow-origin"] == ORIGIN
    exposed = {name.strip() for name in headers["access-control-expose-headers"].split(",")}
    assert {"content-range", "content-disposition", "content-length", "etag", "x-request-id"} <= exposed
    preflight = subprocess.run(
        ["curl", "-sS", "-D", "-", "-o", "/dev/null", "-X", "OPTIONS", "-H", f"Origin: {ORIGIN}",
         "-H", "Access-Control-Request-Method: GET", "-H", "Access-Control-Request-Headers: authorization, range",
         f"http://127.0.0.1:{server.http_port}/builds/{build_id}/logs.txt"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout.lower()
    allowed = re.search(r"access-control-allow-headers: (.*)", preflight)
    assert allowed is not None and {"authorization", "range", "if-range"} <= {h.strip() for h in allowed.group(1).split(",")}
    assert "access-control-allow-methods: get, post" in preflight
