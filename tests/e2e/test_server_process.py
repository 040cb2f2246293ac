"""`python -m server` as an operator runs it: --help, the schema check at
start-up, health that follows the database, graceful shutdown on signals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator

import grpc
import psycopg
import pytest
from buildplatform.v1 import build_pb2, project_pb2, user_pb2
from grpc_health.v1 import health_pb2

from server import migrate
from server.config import ENVIRONMENT
from tests.support import ROOT, ServerProcess, create_database, drop_database, stubs

WAIT = 30.0  # an upper bound for things that happen "soon"; never asserted as a duration


def eventually(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.05)


def run_server(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": database_url, "GRPC_ADDRESS": "127.0.0.1:0"}
    return subprocess.run([sys.executable, "-m", "server", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


@pytest.fixture
def fresh_database(postgres: str) -> Iterator[str]:
    """A database of its own, not migrated."""
    url = create_database(postgres, prefix="bp_proc")
    yield url
    drop_database(postgres, url)


@pytest.fixture
def own_server(fresh_database: str) -> Iterator[ServerProcess]:
    migrate.upgrade(fresh_database)
    proc = ServerProcess(fresh_database, env={"PYTHONFAULTHANDLER": "1"}).start()
    yield proc
    proc.stop()


def health(address: str, service: str = "") -> int:
    with grpc.insecure_channel(address) as channel:
        return stubs(channel).health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status


# --- --help and the schema check -----------------------------------------------------


def test_help_documents_every_environment_variable():
    result = subprocess.run([sys.executable, "-m", "server", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0
    for name, _, _ in ENVIRONMENT:
        assert name in result.stdout, name
    assert "--migrate" in result.stdout
    assert "DATABASE_URL" in result.stdout and "SHUTDOWN_GRACE_SECONDS" in result.stdout


def test_server_refuses_to_start_on_an_empty_database_and_says_what_to_run(fresh_database):
    result = run_server(fresh_database)
    assert result.returncode != 0
    assert "refusing to start" in result.stderr
    assert "python -m server --migrate" in result.stderr
    assert "listening on" not in result.stderr


def test_server_refuses_to_start_on_a_schema_at_an_unknown_revision(fresh_database):
    migrate.upgrade(fresh_database)
    with psycopg.connect(fresh_database, autocommit=True) as conn:
        conn.execute("UPDATE alembic_version SET version_num = 'ffffffffffff'")
    result = run_server(fresh_database)
    assert result.returncode != 0
    assert "ffffffffffff" in result.stderr and "--migrate" in result.stderr


def test_migrate_only_brings_the_schema_to_head_and_exits(fresh_database):
    result = run_server(fresh_database, "--migrate-only")
    assert result.returncode == 0, result.stderr
    assert migrate.schema_problem(fresh_database) is None


def test_server_with_migrate_serves_on_an_empty_database(fresh_database):
    proc = ServerProcess(fresh_database, args=["--migrate"]).start()
    try:
        assert health(proc.address) == health_pb2.HealthCheckResponse.SERVING
    finally:
        assert proc.stop() == 0


def test_an_invalid_number_in_the_environment_is_refused_by_name(fresh_database):
    env = {**os.environ, "DATABASE_URL": fresh_database, "DB_POOL_SIZE": "ten"}
    result = subprocess.run([sys.executable, "-m", "server"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    assert "DB_POOL_SIZE" in result.stderr
    assert "Traceback" not in result.stderr


# --- health follows the database -------------------------------------------------------


def test_health_answers_serving_as_soon_as_the_server_listens(fresh_database):
    migrate.upgrade(fresh_database)
    proc = ServerProcess(fresh_database, env={"HEALTH_CHECK_SECONDS": "60"}).start()
    try:
        # The first check, right after "listening on": no NOT_FOUND, no waiting for a ping.
        assert health(proc.address, "buildplatform.v1.UserService") == health_pb2.HealthCheckResponse.SERVING
        assert health(proc.address) == health_pb2.HealthCheckResponse.SERVING
    finally:
        proc.stop()


def set_connections(admin_url: str, database_url: str, *, allowed: bool) -> None:
    """Make the database unreachable (no new connections, existing ones ended) or reachable again."""
    name = psycopg.conninfo.conninfo_to_dict(database_url)["dbname"]
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS {"true" if allowed else "false"}')
        if not allowed:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))


def test_health_is_not_serving_while_the_database_is_unreachable(postgres, fresh_database, own_server):
    serving, not_serving = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING
    service = "buildplatform.v1.BuildService"
    assert health(own_server.address, service) == serving
    set_connections(postgres, fresh_database, allowed=False)
    try:
        eventually(lambda: health(own_server.address, service) == not_serving, "NOT_SERVING")
        assert health(own_server.address) == not_serving
        with grpc.insecure_channel(own_server.address) as channel, pytest.raises(grpc.RpcError) as caught:
            stubs(channel).users.GetUser(user_pb2.GetUserRequest(id="c" + "0" * 24), timeout=20)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE, caught.value.details()
    finally:
        set_connections(postgres, fresh_database, allowed=True)
    eventually(lambda: health(own_server.address, service) == serving, "SERVING again")
    with grpc.insecure_channel(own_server.address) as channel:
        api = stubs(channel)
        eventually(lambda: _create_user_works(api), "a write to succeed again")
    assert own_server.proc is not None and own_server.proc.poll() is None


def _create_user_works(api) -> bool:
    try:
        api.users.CreateUser(user_pb2.CreateUserRequest(user=user_pb2.User(clerk_id=f"k{time.monotonic_ns()}", email="h@example.com")), timeout=10)
    except grpc.RpcError as error:
        assert error.code() == grpc.StatusCode.UNAVAILABLE, error.details()
        return False
    return True


# --- graceful shutdown -------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_lets_the_running_call_finish_and_the_process_exits_0(fresh_database, own_server, sig):
    with grpc.insecure_channel(own_server.address) as channel:
        api = stubs(channel)
        user = api.users.CreateUser(user_pb2.CreateUserRequest(user=user_pb2.User(clerk_id="graceful", email="g@example.com"))).user
        project = api.projects.CreateProject(project_pb2.CreateProjectRequest(project=project_pb2.Project(user_id=user.id, name="p"))).project
        build = api.builds.CreateBuild(
            build_pb2.CreateBuildRequest(build=build_pb2.Build(user_id=user.id, project_id=project.id, app_spec="x"))
        ).build

        # Hold the build's row lock so that the call below is in flight for as long as we like.
        with psycopg.connect(fresh_database) as blocker:
            blocker.execute("SELECT 1 FROM builds WHERE id = %s FOR UPDATE", (build.id,))
            outcome: list[object] = []

            def call() -> None:
                try:
                    outcome.append(
                        api.builds.TransitionBuild(
                            build_pb2.TransitionBuildRequest(id=build.id, status=build_pb2.BUILD_STATUS_INITIALIZING), timeout=WAIT
                        )
                    )
                except grpc.RpcError as error:
                    outcome.append(error)

            caller = threading.Thread(target=call)
            caller.start()
            eventually(lambda: _waiting_on_a_lock(blocker), "the call to wait for the row lock")
            assert own_server.proc is not None
            own_server.proc.send_signal(sig)
            eventually(lambda: "shutting down" in own_server.log(), "the server to begin shutting down")
            blocker.commit()  # release: the in-flight call may now finish
        caller.join(WAIT)
    assert len(outcome) == 1
    assert isinstance(outcome[0], build_pb2.TransitionBuildResponse), outcome[0]
    assert outcome[0].build.status == build_pb2.BUILD_STATUS_INITIALIZING
    assert own_server.proc.wait(WAIT) == 0
    assert "stopped" in own_server.log()
    with psycopg.connect(fresh_database) as conn:
        assert conn.execute("SELECT status FROM builds WHERE id = %s", (build.id,)).fetchone() == ("INITIALIZING",)


def _waiting_on_a_lock(conn: psycopg.Connection) -> bool:
    with psycopg.connect(conn.info.dsn, autocommit=True) as probe:
        row = probe.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        ).fetchone()
    return row is not None and row[0] > 0


def test_new_calls_are_refused_once_shutdown_began(fresh_database, own_server):
    assert own_server.proc is not None
    own_server.proc.send_signal(signal.SIGTERM)
    code = own_server.proc.wait(WAIT)
    assert code == 0, f"exit code {code}:\n{own_server.log()}"
    with grpc.insecure_channel(own_server.address) as channel, pytest.raises(grpc.RpcError) as caught:
        stubs(channel).users.GetUser(user_pb2.GetUserRequest(id="c" + "0" * 24), timeout=5)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE, caught.value
