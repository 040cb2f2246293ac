"""WORKERS=N: N processes on one port, supervised, through real processes."""

from __future__ import annotations

import json
import os
import signal
from typing import Any

import grpc
import pytest
from buildplatform.v1 import build_pb2, user_pb2
from grpc_health.v1 import health_pb2

from tests.support import ServerProcess, eventually, health, open_channel, running_server, stubs

MISSING_USER = user_pb2.GetUserRequest(id="c" + "0" * 24)


def records(proc: ServerProcess) -> list[dict[str, Any]]:
    return [json.loads(line) for line in list(proc.lines) if line.startswith("{")]


def started(proc: ServerProcess) -> dict[int, int]:
    """worker number -> pid of its latest start, from the supervisor's log."""
    pids: dict[int, int] = {}
    for record in records(proc):
        if record.get("msg", "").startswith("worker ") and "pid" in record and "started" in record["msg"]:
            pids[record["worker"]] = record["pid"]
    return pids


def grpc_listening(proc: ServerProcess) -> list[int]:
    """The workers that logged their gRPC port, once per start."""
    return [r["worker"] for r in records(proc)
            if r.get("msg", "").startswith("listening on") and "HTTP" not in r["msg"] and "worker" in r]


@pytest.fixture
def two_workers(database_url: str):
    with running_server(database_url, WORKERS="2", GRPC_ADDRESS="127.0.0.1:0") as proc:
        eventually(lambda: set(grpc_listening(proc)) == {1, 2}, "both workers listening")
        yield proc


def call_on_new_connections(proc: ServerProcess, count: int) -> None:
    for _ in range(count):
        with open_channel(proc.address, token=proc.token) as channel, pytest.raises(grpc.RpcError) as caught:
            stubs(channel).users.GetUser(MISSING_USER, timeout=10)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def served_by(proc: ServerProcess) -> set[int]:
    return {r["worker"] for r in records(proc) if r.get("logger") == "server.access" and r.get("method", "").endswith("/GetUser")}


def test_two_workers_share_one_port_and_both_serve(two_workers: ServerProcess):
    pids = started(two_workers)
    assert set(pids) == {1, 2} and pids[1] != pids[2] and os.getpid() not in pids.values()
    call_on_new_connections(two_workers, 40)   # the kernel spreads new connections (SO_REUSEPORT)
    eventually(lambda: served_by(two_workers) == {1, 2}, "calls answered by both workers")
    assert health(two_workers.address) == health_pb2.HealthCheckResponse.SERVING


def test_a_worker_that_dies_is_restarted_and_the_port_keeps_serving(two_workers: ServerProcess):
    victim = started(two_workers)[2]
    os.kill(victim, signal.SIGKILL)
    eventually(lambda: started(two_workers).get(2) not in (None, victim), "worker 2 restarted")
    assert any("worker 2" in r.get("msg", "") and "SIGKILL" in r.get("msg", "") for r in records(two_workers))
    eventually(lambda: grpc_listening(two_workers).count(2) == 2, "the new worker 2 listening")
    call_on_new_connections(two_workers, 10)   # every connection lands on a live worker


def test_sigterm_drains_every_worker(two_workers: ServerProcess, make_build):
    build = make_build()   # through the session's server, same database
    with open_channel(two_workers.address, token=two_workers.token) as channel:
        follow = stubs(channel).builds.WatchBuild(build_pb2.WatchBuildRequest(id=build.id), timeout=30)
        assert next(follow).build.id == build.id
        two_workers.proc.send_signal(signal.SIGTERM)
        with pytest.raises(grpc.RpcError) as ended:
            for _ in follow:
                pass
    assert ended.value.code() == grpc.StatusCode.UNAVAILABLE   # retryable, on another replica
    assert two_workers.proc.wait(30) == 0
    assert sum(1 for r in records(two_workers) if r.get("msg") == "stopped") == 3   # two workers and the supervisor


def test_a_port_in_use_is_one_line_before_any_worker_starts(database_url: str, tmp_path):
    import socket

    from tests.support import fails_with_one_line

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {"DATABASE_URL": database_url, "WORKERS": "2", "GRPC_ADDRESS": f"127.0.0.1:{port}"}
        line = fails_with_one_line(env)
    assert "port is in use" in line, line
