"""A call whose deadline passes stops its database work: the deadline travels
into PostgreSQL (statement_timeout and lock_timeout of the call's statements),
so a statement still running at the deadline is cancelled by PostgreSQL
itself, a lock wait is abandoned, and nothing commits after the caller was
told the call failed. Tried from outside, on rows a test connection holds
locked."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import psycopg
from buildplatform.v1 import build_log_pb2, user_pb2

from tests.support import mask, waiting_on_a_lock

CALLS = 10
DEADLINE = 0.02   # seconds
# How such a call may end: its deadline, or the server saying it cannot take
# it in time (appends to one build queue in the server first).
FAILED = {grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE}


def _server_lock_waiters(dsn: str) -> int:
    """The server's sessions waiting for a lock now."""
    with psycopg.connect(dsn, autocommit=True) as probe:
        row = probe.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock' AND application_name = 'buildplatform'"
        ).fetchone()
    assert row is not None
    return int(row[0])


def _codes(calls: list) -> list[grpc.StatusCode]:  # type: ignore[type-arg]
    def one(call) -> grpc.StatusCode:  # type: ignore[no-untyped-def]
        try:
            call()
        except grpc.RpcError as error:
            return error.code()  # type: ignore[no-any-return]
        return grpc.StatusCode.OK

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(one, calls))


def test_lock_waits_end_at_the_callers_deadline(api, user, database_url):
    with psycopg.connect(database_url) as holder:
        holder.execute("SELECT 1 FROM users WHERE id = %s FOR UPDATE", (user.id,))
        request = user_pb2.UpdateUserRequest(user=user_pb2.User(id=user.id, name="renamed"), update_mask=mask("name"))
        codes = _codes([lambda: api.users.UpdateUser(request, timeout=DEADLINE)] * CALLS)
        assert set(codes) <= FAILED, codes
        time.sleep(1.0)
        assert _server_lock_waiters(database_url) == 0   # PostgreSQL abandoned every wait
        holder.rollback()
    assert api.users.GetUser(user_pb2.GetUserRequest(id=user.id), timeout=5).user.name == user.name   # none of the updates was written


def test_appends_cut_by_their_deadline_are_never_written(api, build, database_url):
    entry = build_log_pb2.LogEntry(level=build_log_pb2.LOG_LEVEL_INFO, message="late")
    before = api.logs.ListBuildLogs(build_log_pb2.ListBuildLogsRequest(build_id=build.id), timeout=5)
    with psycopg.connect(database_url) as holder:
        holder.execute("SELECT 1 FROM builds WHERE id = %s FOR UPDATE", (build.id,))
        request = build_log_pb2.AppendBuildLogsRequest(build_id=build.id, entries=[entry])
        codes = _codes([lambda: api.logs.AppendBuildLogs(request, timeout=DEADLINE)] * CALLS)
        assert set(codes) <= FAILED, codes
        time.sleep(1.0)
        assert not waiting_on_a_lock(database_url)
        holder.rollback()
    time.sleep(0.5)
    after = api.logs.ListBuildLogs(build_log_pb2.ListBuildLogsRequest(build_id=build.id), timeout=5)
    assert [line.message for line in after.logs] == [line.message for line in before.logs]
    # The build still takes appends: the first one gets the next sequence number.
    done = api.logs.AppendBuildLogs(build_log_pb2.AppendBuildLogsRequest(build_id=build.id, entries=[entry]), timeout=5)
    assert done.first_sequence == len(before.logs) + 1
