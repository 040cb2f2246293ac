"""The janitor in a real server process (server.archive.janitor): expiry by
retention, and the windows of the hot tables. Time passes in the test
database: finish times are set in the past rather than waited for."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import grpc
import psycopg
import pytest
from buildplatform.v1 import build_event_pb2 as E
from buildplatform.v1 import build_log_pb2 as L
from buildplatform.v1 import build_pb2, project_pb2, user_pb2

from server import migrate
from server.store import partitions
from tests.e2e.expect import failure, sql_count
from tests.e2e.streaming import append, finish, lines, start_running
from tests.support import (
    ServerProcess,
    create_database,
    drop_database,
    eventually,
    running_server,
    stubs,
)

# The archiver stays off: builds here are hot unless a test says otherwise.
JANITOR = {"ARCHIVE": "false", "JANITOR_SECONDS": "0.2", "HOT_PARTITION_GRACE_SECONDS": "0",
           "LOG_RETENTION_DAYS": "90"}


# Builds created before migration 0004, whose rows are in the partition below
# the first window (the table as it was): ids of three hours ago, one
# finished, one still running. Made before the server (and its janitor) starts.
PAST = partitions.bound(datetime.now(UTC) - timedelta(hours=3))
OLD_IDS = [PAST + "0000" + suffix * 12 for suffix in ("a", "b")]
OLD_OWNER = "c" + "0" * 20 + "0ld1"


@pytest.fixture(scope="module")
def janitor_db(postgres: str) -> Iterator[str]:
    """A database of this module's own: its windows are dropped and made."""
    url = create_database(postgres, prefix="bp_janitor")
    migrate.upgrade(url)
    sql(url, "INSERT INTO users (id, clerk_id, email, create_time, update_time) "
             "VALUES (%s, 'old-owner', 'old@example.com', now(), now())", OLD_OWNER)
    sql(url, "INSERT INTO projects (id, user_id, name, create_time, update_time) "
             "VALUES (%s, %s, 'Old', now(), now())", OLD_OWNER, OLD_OWNER)
    for build_id, status in zip(OLD_IDS, ("COMPLETED", "RUNNING"), strict=True):
        sql(url, "INSERT INTO builds (id, user_id, project_id, status, app_spec, create_time, update_time, "
                 "finish_time, last_log_seq) VALUES (%s, %s, %s, %s, '# old', now(), now(), "
                 "CASE WHEN %s = 'COMPLETED' THEN now() END, 1)",
            build_id, OLD_OWNER, OLD_OWNER, status, status)
        sql(url, "INSERT INTO build_logs (build_id, seq, level, message, create_time, wire_bytes) "
                 "VALUES (%s, 1, 'info', 'old line', now(), 20)", build_id)
    yield url
    drop_database(postgres, url)


@pytest.fixture(scope="module")
def janitor_server(janitor_db: str) -> Iterator[ServerProcess]:
    with running_server(janitor_db, **JANITOR) as proc:
        yield proc


@pytest.fixture(scope="module")
def jan(janitor_server: ServerProcess) -> Iterator[SimpleNamespace]:
    with janitor_server.channel() as channel:
        yield stubs(channel)


@pytest.fixture(scope="module")
def owner(jan: SimpleNamespace) -> user_pb2.User:
    return jan.users.CreateUser(user_pb2.CreateUserRequest(
        user=user_pb2.User(clerk_id="janitor-owner", email="janitor@example.com"))).user


def sql(url: str, query: str, *params: object) -> list[tuple]:  # type: ignore[type-arg]
    with psycopg.connect(url, autocommit=True) as conn:
        cursor = conn.execute(query, params)
        return cursor.fetchall() if cursor.description else []


def finished_build(api: SimpleNamespace, owner: user_pb2.User, project: project_pb2.Project, *, days_ago: float,
                   url: str, count: int = 3) -> str:
    build = api.builds.CreateBuild(build_pb2.CreateBuildRequest(
        build=build_pb2.Build(user_id=owner.id, project_id=project.id, app_spec="# kept?"))).build
    start_running(api, build.id)
    append(api, build.id, lines(*(f"line {i}" for i in range(1, count + 1))))
    finish(api, build.id)
    sql(url, "UPDATE builds SET finish_time = now() - make_interval(secs => %s) WHERE id = %s",
        days_ago * 86400, build.id)
    return str(build.id)


def state(url: str, build_id: str) -> str:
    return str(sql(url, "SELECT archive_state FROM builds WHERE id = %s", build_id)[0][0])


def test_builds_past_their_retention_expire_and_keep_their_row_status_and_timings(jan, janitor_server, janitor_db, owner):
    short = jan.projects.CreateProject(project_pb2.CreateProjectRequest(
        project=project_pb2.Project(user_id=owner.id, name="Short", log_retention_days=1))).project
    default = jan.projects.CreateProject(project_pb2.CreateProjectRequest(
        project=project_pb2.Project(user_id=owner.id, name="Default"))).project

    due = finished_build(jan, owner, short, days_ago=1.01, url=janitor_db)
    young = finished_build(jan, owner, short, days_ago=0.9, url=janitor_db)
    on_default = finished_build(jan, owner, default, days_ago=2, url=janitor_db)
    old_on_default = finished_build(jan, owner, default, days_ago=91, url=janitor_db)
    before = jan.builds.GetBuild(build_pb2.GetBuildRequest(id=due)).build

    eventually(lambda: state(janitor_db, due) == "expired" and state(janitor_db, old_on_default) == "expired",
               "the builds past their retention to expire")
    assert state(janitor_db, young) == "hot" and state(janitor_db, on_default) == "hot"
    assert metric_values(janitor_server)["buildplatform_logs_expired_total"] >= 2
    after = jan.builds.GetBuild(build_pb2.GetBuildRequest(id=due)).build
    assert (after.status, after.finish_time, after.start_time, after.create_time) == (
        before.status, before.finish_time, before.start_time, before.create_time)
    expire_time = sql(janitor_db, "SELECT expire_time FROM builds WHERE id = %s", due)[0][0]
    assert abs(datetime.now(UTC) - expire_time) < timedelta(minutes=1)
    # No bulk DELETE of hot rows: they stay until their window is dropped.
    assert sql_count(janitor_db, "SELECT count(*) FROM build_logs WHERE build_id = %s", due) == 3
    # A hot build may have had an archiving attempt running: its prefix waits an hour.
    assert sql(janitor_db, "SELECT prefix, not_before > now() + interval '50 minutes' FROM archive_garbage "
                           "WHERE build_id = %s", due) == [(f"builds/{due}/", True)]


def test_shortening_a_retention_expires_what_it_now_covers(jan, janitor_db, owner):
    project = jan.projects.CreateProject(project_pb2.CreateProjectRequest(
        project=project_pb2.Project(user_id=owner.id, name="Shortened", log_retention_days=30))).project
    build_id = finished_build(jan, owner, project, days_ago=10, url=janitor_db)
    jan.builds.GetBuild(build_pb2.GetBuildRequest(id=build_id))
    assert state(janitor_db, build_id) == "hot"
    jan.projects.UpdateProject(project_pb2.UpdateProjectRequest(
        project=project_pb2.Project(id=project.id, log_retention_days=7),
        update_mask={"paths": ["log_retention_days"]}))
    eventually(lambda: state(janitor_db, build_id) == "expired", "the build to expire under the shorter retention")


def test_reading_an_expired_build_is_failed_precondition_logs_expired_with_the_time(jan, janitor_server, janitor_db, owner):
    project = jan.projects.CreateProject(project_pb2.CreateProjectRequest(
        project=project_pb2.Project(user_id=owner.id, name="Read", log_retention_days=1))).project
    build_id = finished_build(jan, owner, project, days_ago=2, url=janitor_db)
    eventually(lambda: state(janitor_db, build_id) == "expired", "the build to expire")
    expire_time = sql(janitor_db, "SELECT expire_time FROM builds WHERE id = %s", build_id)[0][0]

    def expired_at(got) -> datetime:  # type: ignore[no-untyped-def]
        assert got.code == grpc.StatusCode.FAILED_PRECONDITION, (got.code, got.message)
        assert got.reason == "LOGS_EXPIRED", got.reason
        return datetime.fromisoformat(got.metadata["expire_time"].replace("Z", "+00:00"))

    calls = [
        (jan.logs.ListBuildLogs, L.ListBuildLogsRequest(build_id=build_id)),
        (lambda r: list(jan.logs.StreamBuildLogs(r, timeout=10)), L.StreamBuildLogsRequest(build_id=build_id)),
        (lambda r: list(jan.logs.StreamBuildLogs(r, timeout=10)),
         L.StreamBuildLogsRequest(build_id=build_id, tail_lines=10)),
        (jan.events.ListBuildEvents, E.ListBuildEventsRequest(build_id=build_id)),
        (lambda r: list(jan.events.StreamBuildEvents(r, timeout=10)), E.StreamBuildEventsRequest(build_id=build_id)),
    ]
    for call, request in calls:
        assert abs(expired_at(failure(call, request)) - expire_time) < timedelta(milliseconds=1)

    http = janitor_server.http()
    got = http.unary("buildplatform.v1.BuildLogService/ListBuildLogs", L.ListBuildLogsRequest(build_id=build_id),
                     L.ListBuildLogsResponse)
    assert got.code == "FAILED_PRECONDITION" and "expired" in got.message
    streamed = http.stream("buildplatform.v1.BuildLogService/StreamBuildLogs",
                           L.StreamBuildLogsRequest(build_id=build_id), L.StreamBuildLogsResponse)
    assert streamed.code == "FAILED_PRECONDITION" and not streamed.messages


# --- windows ------------------------------------------------------------------------------


def attached(url: str, table: str) -> set[str]:
    return {name for (name,) in sql(url, "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                                         "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = %s", table)}


def exists(url: str, name: str) -> bool:
    return bool(sql(url, "SELECT 1 FROM pg_class WHERE relname = %s", name))


def test_windows_ahead_are_created_again_when_missing(janitor_server, janitor_db):
    ahead = partitions.windows_ahead(datetime.now(UTC), partitions.DEFAULT_WINDOW_SECONDS, 3)[-1]
    name = partitions.window_name("build_logs", ahead)
    eventually(lambda: name in attached(janitor_db, "build_logs"), "the janitor to create the windows ahead")
    sql(janitor_db, f'DROP TABLE "{name}"')
    assert name not in attached(janitor_db, "build_logs")
    eventually(lambda: name in attached(janitor_db, "build_logs"), f"the janitor to create {name} again")


def test_the_initial_partition_is_dropped_only_once_every_build_in_it_left_the_hot_tier(janitor_server, janitor_db):
    """The partition below the first window holds the builds of before the
    migration: one hot and finished, one still running (OLD_IDS)."""
    assert sql(janitor_db, "SELECT tableoid::regclass::text FROM build_logs WHERE build_id = %s", OLD_IDS[0]) == [
        ("build_logs_initial",)]

    def rounds_pass() -> None:
        """Several janitor rounds (0.2 s each) under the current state."""
        time.sleep(1)

    rounds_pass()
    assert "build_logs_initial" in attached(janitor_db, "build_logs"), "dropped with a hot build in it"
    sql(janitor_db, "UPDATE builds SET archive_state = 'archived', archive_time = now() WHERE id = %s", OLD_IDS[0])
    rounds_pass()
    assert "build_logs_initial" in attached(janitor_db, "build_logs"), "dropped with a running build in it"

    # The running one finishes and expires; now every build in it left 'hot'.
    sql(janitor_db, "UPDATE builds SET status = 'COMPLETED', finish_time = now(), archive_state = 'expired', "
                    "expire_time = now() WHERE id = %s", OLD_IDS[1])
    eventually(lambda: "build_logs_initial" not in attached(janitor_db, "build_logs")
               and "build_events_initial" not in attached(janitor_db, "build_events"),
               "the janitor to drop the initial partitions")
    assert not exists(janitor_db, "build_logs_initial") and not exists(janitor_db, "build_events_initial")
    # The current window and the DEFAULT partition stay, and serve.
    assert "build_logs_default" in attached(janitor_db, "build_logs")
    now_window = partitions.window_name("build_logs", partitions.window_start(datetime.now(UTC)))
    assert now_window in attached(janitor_db, "build_logs")
    assert sql_count(janitor_db, "SELECT count(*) FROM build_logs WHERE build_id = ANY(%s)", OLD_IDS) == 0
    assert "janitor:" in janitor_server.log() and "build_logs_initial" in janitor_server.log()
    served = metric_values(janitor_server)
    assert served["buildplatform_hot_partitions_dropped_total"] >= 2


def metric_values(server: ServerProcess) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {name: float(value) for name, _, value in (line.partition(" ") for line in text.splitlines())
            if name and not name.startswith("#") and "{" not in name}
