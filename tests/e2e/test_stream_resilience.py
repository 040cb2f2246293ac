"""What happens to live streams when connections break."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid

import psycopg
from buildplatform.v1 import build_log_pb2 as L

from tests.e2e.streaming import append, finish, lines, start_running
from tests.support import ROOT


def _next_with_lines(stream):
    response = next(stream)
    while not response.logs:
        response = next(stream)
    return response


def test_lines_of_one_append_arrive_in_one_message(api, build):
    start_running(api, build.id)
    stream = api.logs.StreamBuildLogs(L.StreamBuildLogsRequest(build_id=build.id, follow=True), timeout=30)
    assert next(stream).caught_up
    append(api, build.id, lines(*[f"line {i}" for i in range(50)]))
    response = _next_with_lines(stream)
    assert [log.sequence for log in response.logs] == list(range(1, 51))
    stream.cancel()


def test_a_lost_listen_connection_loses_no_line(api, database_url, build):
    """The server's LISTEN connection is killed; lines appended while it is
    down still reach the follower once the listener has reconnected."""
    start_running(api, build.id)
    stream = api.logs.StreamBuildLogs(L.StreamBuildLogsRequest(build_id=build.id, follow=True), timeout=60)
    assert next(stream).caught_up
    with psycopg.connect(database_url, autocommit=True) as conn:
        killed = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND application_name = 'buildplatform-listen'"
        ).fetchall()
        assert killed, "no LISTEN connection found"
        append(api, build.id, lines("written while the listener was away"))
    received = _next_with_lines(stream)
    assert [log.message for log in received.logs] == ["written while the listener was away"]
    append(api, build.id, lines("after the reconnect"))
    assert [log.message for log in _next_with_lines(stream).logs] == ["after the reconnect"]
    finish(api, build.id)
    assert [r for r in stream if r.logs] == []


FOLLOWER = """
import sys
from buildplatform.v1 import build_log_pb2 as L, build_log_pb2_grpc
from tests.support import open_channel
channel = open_channel(sys.argv[1], token=sys.argv[4])
stub = build_log_pb2_grpc.BuildLogServiceStub(channel)
request = L.StreamBuildLogsRequest(build_id=sys.argv[2], follow=True)
for response in stub.StreamBuildLogs(request, metadata=[("x-request-id", sys.argv[3])]):
    if response.caught_up:
        print("following", flush=True)
"""


def test_a_follower_whose_client_vanished_is_released(api, server, build):
    """A client process holding a follow stream is killed with SIGKILL; the
    server notices, ends the stream (CANCELLED in its access log) and keeps
    serving."""
    start_running(api, build.id)

    request_id = f"vanishing-follower-{uuid.uuid4().hex}"

    def released() -> bool:
        for line in list(server.lines):
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if entry.get("request_id") == request_id:
                assert entry["method"].endswith("/StreamBuildLogs")
                assert entry["code"] == "CANCELLED", entry
                return True
        return False

    client = subprocess.Popen(
        [sys.executable, "-c", FOLLOWER, server.address, build.id, request_id, server.token], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    assert client.stdout is not None
    assert client.stdout.readline().strip() == "following"
    assert not released()
    client.kill()
    client.wait()
    client.stdout.close()
    deadline = time.monotonic() + 30
    while not released() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert released(), "the server did not release the vanished follower"
    append(api, build.id, lines("the server still serves"))
    finish(api, build.id)


def test_shutdown_ends_follow_streams_with_unavailable_and_the_resume_cursor(api, database_url, build):
    """On SIGTERM a follower is told to resume elsewhere (UNAVAILABLE, with
    its cursor) instead of holding the grace period open, and the server
    exits cleanly."""
    import grpc

    from tests.support import ServerProcess, stubs

    start_running(api, build.id)
    append(api, build.id, lines("one", "two"))
    proc = ServerProcess(database_url, env={"SHUTDOWN_GRACE_SECONDS": "30"}).start()
    try:
        with proc.channel() as channel:
            stream = stubs(channel).logs.StreamBuildLogs(
                L.StreamBuildLogsRequest(build_id=build.id, follow=True), timeout=60
            )
            assert next(stream).cursor == 2
            proc.proc.terminate()
            try:
                for _ in stream:
                    pass
                raise AssertionError("the stream ended normally although the build is running")
            except grpc.RpcError as error:
                assert error.code() == grpc.StatusCode.UNAVAILABLE, error
                assert "after_sequence=2" in error.details()
    finally:
        assert proc.stop() == 0, proc.log()
    assert '"code": "UNAVAILABLE"' in proc.log()
