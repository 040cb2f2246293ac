"""A database that goes away: stopped, frozen (SIGSTOP: no answer and no
reset, like a network partition), started again, or down when the server
starts. Each test runs its own PostgreSQL (tests.support.OwnPostgres); the
shared one is never touched.

No test asserts a duration. "Answers within a few seconds" is asserted the
way a client meets it: the call carries a deadline longer than
DB_TIMEOUT_SECONDS, and must come back UNAVAILABLE, not DEADLINE_EXCEEDED.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import grpc
import psycopg
import pytest
from buildplatform.v1 import build_log_pb2 as L
from buildplatform.v1 import build_pb2, project_pb2, user_pb2
from grpc_health.v1 import health_pb2

from server import migrate
from tests.e2e.expect import failure
from tests.support import OwnPostgres, ServerProcess, eventually, health, running_server, stubs

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
DB_TIMEOUT = 2.0
DEADLINE = DB_TIMEOUT + 6  # a call that hung would exceed this and fail DEADLINE_EXCEEDED
SETTINGS = {"DB_TIMEOUT_SECONDS": str(DB_TIMEOUT), "DB_POOL_TIMEOUT_SECONDS": "1", "HEALTH_CHECK_SECONDS": "0.5"}


@pytest.fixture
def own_postgres() -> Iterator[OwnPostgres]:
    # Not under pytest's temporary directory: its server runs as another user,
    # who must traverse the parent folders, and every pytest session that
    # starts on the machine takes those permissions away from
    # /tmp/pytest-of-<user> (it chmods it to 0700).
    directory = Path(tempfile.mkdtemp(prefix="bp-own-postgres-"))
    try:
        pg = OwnPostgres(directory / "pg")
        migrate.upgrade(pg.admin_url)
        yield pg
        pg.close()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _owner(api) -> tuple[user_pb2.User, project_pb2.Project]:  # type: ignore[no-untyped-def]
    user = api.users.CreateUser(
        user_pb2.CreateUserRequest(user=user_pb2.User(clerk_id=f"outage_{id(api)}", email="o@example.com")),
        timeout=DEADLINE,
    ).user
    project = api.projects.CreateProject(
        project_pb2.CreateProjectRequest(project=project_pb2.Project(user_id=user.id, name="p")), timeout=DEADLINE
    ).project
    return user, project


def _running_build(api, user, project) -> build_pb2.Build:  # type: ignore[no-untyped-def]
    build = api.builds.CreateBuild(
        build_pb2.CreateBuildRequest(build=build_pb2.Build(user_id=user.id, project_id=project.id, app_spec="x")),
        timeout=DEADLINE,
    ).build
    api.builds.TransitionBuild(
        build_pb2.TransitionBuildRequest(id=build.id, status=build_pb2.BUILD_STATUS_INITIALIZING), timeout=DEADLINE
    )
    return build


def _every_kind_of_call(api, user, build):  # type: ignore[no-untyped-def]
    """One call of each path to the database: hot-path read, SQLAlchemy list
    and write, COPY append, stream read."""
    return [
        (api.users.GetUser, user_pb2.GetUserRequest(id=user.id)),
        (api.builds.GetBuild, build_pb2.GetBuildRequest(id=build.id)),
        (api.users.ListUsers, user_pb2.ListUsersRequest()),
        (api.users.UpdateUser, user_pb2.UpdateUserRequest(user=user_pb2.User(id=user.id, name="n"), update_mask={"paths": ["name"]})),
        (api.logs.AppendBuildLogs, L.AppendBuildLogsRequest(
            build_id=build.id, entries=[L.LogEntry(level=L.LOG_LEVEL_INFO, message="x")])),
        (api.logs.ListBuildLogs, L.ListBuildLogsRequest(build_id=build.id)),
    ]


def _all_unavailable(api, user, build) -> None:  # type: ignore[no-untyped-def]
    for method, request in _every_kind_of_call(api, user, build):
        got = failure(lambda r, m=method: m(r, timeout=DEADLINE), request)
        assert got.code == grpc.StatusCode.UNAVAILABLE, (method, got.code, got.message)
        assert got.retry_delay is not None and got.retry_delay > 0, got
        assert "retry" in got.message, got.message


def _all_work(api, user, build) -> None:  # type: ignore[no-untyped-def]
    """Every call succeeds at its first try: no dead pooled connection is handed out."""
    for method, request in _every_kind_of_call(api, user, build):
        method(request, timeout=DEADLINE)


def _follow(api, build_id: str):  # type: ignore[no-untyped-def]
    stream = api.logs.StreamBuildLogs(L.StreamBuildLogsRequest(build_id=build_id, follow=True), timeout=120)
    assert next(stream).caught_up
    return stream


def _ends_unavailable_with_cursor(stream) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as caught:
        for _ in stream:
            pass
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE, caught.value
    assert "after_sequence=" in (caught.value.details() or ""), caught.value.details()


def test_a_stopped_database_makes_every_call_unavailable_and_a_restarted_one_serves_at_once(own_postgres):
    with running_server(own_postgres.admin_url, **SETTINGS) as server, server.channel() as channel:
        api = stubs(channel)
        user, project = _owner(api)
        build = _running_build(api, user, project)
        follower = _follow(api, build.id)

        own_postgres.stop()
        _ends_unavailable_with_cursor(follower)
        eventually(lambda: health(server.address) == NOT_SERVING, "health NOT_SERVING")
        _all_unavailable(api, user, build)

        own_postgres.start()
        eventually(lambda: health(server.address) == SERVING, "health SERVING again")
        _all_work(api, user, build)
        assert health(server.address, "buildplatform.v1.BuildService") == SERVING
    assert "health: NOT_SERVING" in server.log()


def test_a_frozen_database_is_noticed_and_calls_end_unavailable_instead_of_hanging(own_postgres):
    with running_server(own_postgres.admin_url, **SETTINGS) as server, server.channel() as channel:
        api = stubs(channel)
        user, project = _owner(api)
        build = _running_build(api, user, project)
        follower = _follow(api, build.id)
        with own_postgres.frozen():
            _all_unavailable(api, user, build)
            eventually(lambda: health(server.address) == NOT_SERVING, "health NOT_SERVING")
            _ends_unavailable_with_cursor(follower)
            # The LISTEN connection noticed too: it pings when notifications stop.
            eventually(lambda: "LISTEN connection lost" in server.log(), "the LISTEN connection to be found dead")
        eventually(lambda: health(server.address) == SERVING, "health SERVING again")
        _all_work(api, user, build)
        # And live delivery works again through a new LISTEN connection.
        follower = _follow(api, build.id)
        api.logs.AppendBuildLogs(L.AppendBuildLogsRequest(
            build_id=build.id, entries=[L.LogEntry(level=L.LOG_LEVEL_INFO, message="thawed")]))
        received = next(r for r in follower if r.logs)
        assert [log.message for log in received.logs] == ["thawed"]
        follower.cancel()


def test_a_server_started_while_the_database_is_down_waits_then_serves(own_postgres):
    own_postgres.stop()
    proc = ServerProcess(own_postgres.admin_url, env=SETTINGS).start()
    try:
        assert health(proc.address) == NOT_SERVING
        assert "waiting for the database" in proc.log()
        own_postgres.start()
        eventually(lambda: health(proc.address) == SERVING, "health SERVING once the database is up")
        with proc.channel() as channel:
            api = stubs(channel)
            user, project = _owner(api)
            _all_work(api, user, _running_build(api, user, project))
            # The page-token key was loaded from the database before SERVING.
            api.users.CreateUser(user_pb2.CreateUserRequest(user=user_pb2.User(clerk_id="second", email="o@example.com")))
            first = api.users.ListUsers(user_pb2.ListUsersRequest(page_size=1, email="o@example.com"))
            rest = api.users.ListUsers(user_pb2.ListUsersRequest(email="o@example.com", page_token=first.next_page_token))
            assert len(first.users) == 1 and len(rest.users) == 1
    finally:
        assert proc.stop() == 0, proc.log()
    assert "Traceback" not in proc.log()
    assert "wrote it to" in proc.log()   # the first admin token, once the database answered


def test_a_database_that_comes_up_unmigrated_still_refuses_with_the_clear_message(own_postgres):
    with psycopg.connect(own_postgres.admin_url, autocommit=True) as conn:
        conn.execute("CREATE DATABASE empty")
    url = own_postgres.admin_url.rsplit("/", 1)[0] + "/empty"
    own_postgres.stop()
    proc = ServerProcess(url, env=SETTINGS).start()
    own_postgres.start()
    assert proc.proc is not None
    proc.proc.wait(60)
    code = proc.stop()
    assert code != 0
    assert "refusing to start" in proc.log() and "python -m server --migrate" in proc.log()
    assert "Traceback" not in proc.log()
