"""Saturation: a process that is full says so at once, with retry advice,
instead of queueing calls for seconds or answering INTERNAL; and health
keeps reporting the database, not the pools.

Calls are held in flight by a row lock taken from outside (a transaction
of the test's own), so the server is saturated for as long as the test
needs, without timing.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import grpc
import psycopg
from buildplatform.v1 import build_log_pb2 as L
from buildplatform.v1 import build_pb2, user_pb2
from grpc_health.v1 import health_pb2

from tests.e2e.expect import failure
from tests.support import WAIT, eventually, health, running_server, stubs, waiting_on_a_lock


@contextmanager
def held(database_url: str, build_id: str, calls: list[Callable[[], Any]]) -> Iterator[list[object]]:
    """Run `calls` in threads while the build's row is locked by the test, so
    each waits inside the server; yield once all of them wait; release the
    lock on exit and join them. The yielded list receives their outcomes."""
    outcomes: list[object] = []

    def run(call: Callable[[], Any]) -> None:
        try:
            outcomes.append(call())
        except grpc.RpcError as error:
            outcomes.append(error)

    with psycopg.connect(database_url) as blocker:
        blocker.execute("SELECT 1 FROM builds WHERE id = %s FOR UPDATE", (build_id,))
        threads = [threading.Thread(target=run, args=(call,)) for call in calls]
        for thread in threads:
            thread.start()
        eventually(lambda: waiting_on_a_lock(database_url, len(calls)), f"{len(calls)} calls to wait for the row lock")
        try:
            yield outcomes
        finally:
            blocker.commit()
            for thread in threads:
                thread.join(WAIT)


def _transition(api, build_id: str) -> Callable[[], Any]:  # type: ignore[no-untyped-def]
    return lambda: api.builds.TransitionBuild(
        build_pb2.TransitionBuildRequest(id=build_id, status=build_pb2.BUILD_STATUS_INITIALIZING), timeout=WAIT
    )


def _update(api, build_id: str) -> Callable[[], Any]:  # type: ignore[no-untyped-def]
    return lambda: api.builds.UpdateBuild(
        build_pb2.UpdateBuildRequest(build=build_pb2.Build(id=build_id, output_url="https://x.example"),
                                     update_mask={"paths": ["output_url"]}),
        timeout=WAIT,
    )


def test_a_saturated_pool_answers_unavailable_with_retry_advice_and_health_stays_serving(database_url, user, build):
    # One connection per pool, held by a call waiting on the row lock.
    with running_server(database_url, DB_POOL_SIZE="1", DB_POOL_MAX_OVERFLOW="0", DB_POOL_TIMEOUT_SECONDS="0.5",
                        DB_TIMEOUT_SECONDS="60") as server, server.channel() as channel:
        api = stubs(channel)
        with held(database_url, build.id, [_transition(api, build.id)]) as outcomes:
            got = failure(lambda r: api.users.UpdateUser(r, timeout=WAIT), user_pb2.UpdateUserRequest(
                user=user_pb2.User(id=user.id, name="busy"), update_mask={"paths": ["name"]}))
            assert got.code == grpc.StatusCode.UNAVAILABLE, got
            assert "saturated" in got.message and got.retry_delay is not None, got
            # The database answers: a busy pool is not an outage.
            assert health(server.address) == health_pb2.HealthCheckResponse.SERVING
            assert server.log().count("health: NOT_SERVING") == 0
        assert len(outcomes) == 1 and isinstance(outcomes[0], build_pb2.TransitionBuildResponse), outcomes
        # Free again: the same call now works.
        api.users.UpdateUser(user_pb2.UpdateUserRequest(user=user_pb2.User(id=user.id, name="free"), update_mask={"paths": ["name"]}), timeout=WAIT)


def test_calls_beyond_max_concurrent_calls_are_refused_at_once_with_retry_advice(database_url, user, build):
    with running_server(database_url, MAX_CONCURRENT_CALLS="2", DB_TIMEOUT_SECONDS="60") as server, \
            server.channel() as channel:
        api = stubs(channel)
        with held(database_url, build.id, [_transition(api, build.id), _update(api, build.id)]) as outcomes:
            got = failure(lambda r: api.users.GetUser(r, timeout=WAIT), user_pb2.GetUserRequest(id=user.id))
            assert got.code == grpc.StatusCode.RESOURCE_EXHAUSTED, got
            assert "MAX_CONCURRENT_CALLS" in got.message and got.retry_delay is not None, got
            # Streams have their own limit: a follower is still admitted.
            stream = api.logs.StreamBuildLogs(L.StreamBuildLogsRequest(build_id=build.id), timeout=WAIT)
            assert next(stream).caught_up
        assert all(not isinstance(outcome, grpc.RpcError) for outcome in outcomes), outcomes
        assert api.users.GetUser(user_pb2.GetUserRequest(id=user.id), timeout=WAIT).user.id == user.id
    assert '"code": "RESOURCE_EXHAUSTED"' in server.log()


def test_streams_beyond_max_streams_are_refused_with_retry_advice(database_url, build):
    with running_server(database_url, MAX_STREAMS="1") as server, server.channel() as channel:
        api = stubs(channel)
        api.builds.TransitionBuild(build_pb2.TransitionBuildRequest(id=build.id, status=build_pb2.BUILD_STATUS_INITIALIZING))
        first = api.logs.StreamBuildLogs(L.StreamBuildLogsRequest(build_id=build.id, follow=True), timeout=WAIT)
        assert next(first).caught_up
        second = api.logs.StreamBuildLogs(L.StreamBuildLogsRequest(build_id=build.id, follow=True), timeout=WAIT)
        got = failure(lambda _: next(second), None)
        assert got.code == grpc.StatusCode.RESOURCE_EXHAUSTED and "MAX_STREAMS" in got.message, got
        assert got.retry_delay is not None
        first.cancel()
        # The slot is free again once the first stream ended.
        eventually(lambda: _stream_admitted(api, build.id), "a stream to be admitted again")


def _stream_admitted(api, build_id: str) -> bool:  # type: ignore[no-untyped-def]
    stream = api.logs.StreamBuildLogs(L.StreamBuildLogsRequest(build_id=build_id), timeout=WAIT)
    try:
        return bool(next(stream).caught_up)
    except grpc.RpcError as error:
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error
        return False


def test_sigterm_answers_calls_still_running_after_the_grace_period_unavailable(database_url, build):
    with running_server(database_url, SHUTDOWN_GRACE_SECONDS="1", DB_TIMEOUT_SECONDS="60") as server:
        with server.channel() as channel:
            api = stubs(channel)
            with held(database_url, build.id, [_transition(api, build.id), _update(api, build.id)]) as outcomes:
                assert server.proc is not None
                server.proc.terminate()
                eventually(lambda: len(outcomes) == 2, "both held calls to be answered")
            assert server.proc.wait(WAIT) == 0
        codes = sorted(outcome.code().name for outcome in outcomes if isinstance(outcome, grpc.RpcError))
        assert codes == ["UNAVAILABLE", "UNAVAILABLE"], outcomes
        assert all("shutting down" in (o.details() or "") for o in outcomes if isinstance(o, grpc.RpcError))
    log = server.log()
    for method in ("TransitionBuild", "UpdateBuild"):
        assert f'"method": "/buildplatform.v1.BuildService/{method}", "code": "UNAVAILABLE"' in log, log[-3000:]
    assert '"code": "CANCELLED"' not in log
    with psycopg.connect(database_url) as conn:  # answered UNAVAILABLE, so nothing was written
        assert conn.execute("SELECT status, revision FROM builds WHERE id = %s", (build.id,)).fetchone() == ("PENDING", 1)


def test_a_hot_build_does_not_starve_calls_on_other_builds(database_url, make_build):
    """Dozens of concurrent appenders on one build, two pooled connections:
    the appends queue in memory (one connection per build), so GetBuild of
    another build always finds a connection."""
    hot, other = make_build(), make_build()
    with running_server(database_url, DB_POOL_SIZE="2", DB_POOL_MAX_OVERFLOW="0", DB_POOL_TIMEOUT_SECONDS="1",
                        DB_TIMEOUT_SECONDS="120") as server, server.channel() as channel:
        api = stubs(channel)
        api.builds.TransitionBuild(build_pb2.TransitionBuildRequest(id=hot.id, status=build_pb2.BUILD_STATUS_INITIALIZING))
        batch = [L.LogEntry(level=L.LOG_LEVEL_INFO, message=f"{i} " + "x" * 1000) for i in range(5000)]
        appended: list[object] = []
        reads: list[object] = []

        def append() -> None:
            try:
                appended.append(api.logs.AppendBuildLogs(L.AppendBuildLogsRequest(build_id=hot.id, entries=batch), timeout=300))
            except grpc.RpcError as error:
                appended.append(error)

        def read() -> None:
            while len(appended) < 30:
                try:
                    reads.append(api.builds.GetBuild(build_pb2.GetBuildRequest(id=other.id), timeout=60))
                except grpc.RpcError as error:
                    reads.append(error)

        threads = [threading.Thread(target=append) for _ in range(30)] + [threading.Thread(target=read)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(300)
    failed_appends = [a for a in appended if isinstance(a, grpc.RpcError)]
    failed_reads = [r for r in reads if isinstance(r, grpc.RpcError)]
    assert not failed_appends, [(e.code(), e.details()) for e in failed_appends[:3]]
    assert not failed_reads, [(e.code(), e.details()) for e in failed_reads[:3]]
    assert len(appended) == 30 and reads
    assert sorted(a.last_sequence for a in appended) == [5000 * (i + 1) for i in range(30)]  # type: ignore[attr-defined]
