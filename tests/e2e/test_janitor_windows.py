"""Windows of one minute (HOT_PARTITION_SECONDS=60, the smallest): a build's
rows land in the window of its creation, and the janitor drops that window
once it ended and every build in it left the hot tier, not before."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from buildplatform.v1 import build_pb2, project_pb2, user_pb2

from server import migrate
from server.store import partitions
from tests.e2e.streaming import append, finish, lines, start_running
from tests.support import create_database, drop_database, eventually, running_server, stubs

SECONDS = 60


def sql(url: str, query: str, *params: object) -> list[tuple]:  # type: ignore[type-arg]
    with psycopg.connect(url, autocommit=True) as conn:
        cursor = conn.execute(query, params)
        return cursor.fetchall() if cursor.description else []


def attached(url: str) -> set[str]:
    return {name for (name,) in sql(url, "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                                         "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname IN "
                                         "('build_logs', 'build_events')")}


@pytest.fixture
def minute_windows(postgres: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("HOT_PARTITION_SECONDS", str(SECONDS))   # read by migration 0004
    url = create_database(postgres, prefix="bp_windows")
    migrate.upgrade(url)
    yield url
    drop_database(postgres, url)


def test_a_window_is_dropped_once_it_ended_and_all_its_builds_left_hot(minute_windows):
    url = minute_windows
    env = {"ARCHIVE": "false", "JANITOR_SECONDS": "0.5", "HOT_PARTITION_SECONDS": str(SECONDS),
           "HOT_PARTITION_GRACE_SECONDS": "0"}
    with running_server(url, **env) as server, server.channel() as channel:
        api = stubs(channel)
        user = api.users.CreateUser(user_pb2.CreateUserRequest(
            user=user_pb2.User(clerk_id="windows", email="windows@example.com"))).user
        project = api.projects.CreateProject(project_pb2.CreateProjectRequest(
            project=project_pb2.Project(user_id=user.id, name="Windows"))).project
        builds = []
        for _ in range(2):
            build = api.builds.CreateBuild(build_pb2.CreateBuildRequest(
                build=build_pb2.Build(user_id=user.id, project_id=project.id, app_spec="# w"))).build
            start_running(api, build.id)
            append(api, build.id, lines("one", "two"))
            builds.append(build.id)
        window = sql(url, "SELECT DISTINCT tableoid::regclass::text FROM build_logs WHERE build_id = ANY(%s)", builds)
        assert len(window) == 1 and partitions.is_window(window[0][0]), window
        name = window[0][0]
        events_name = name.replace("build_logs_", "build_events_", 1)
        start = datetime.strptime(name.rpartition("_w")[2], "%Y%m%dt%H%M%S").replace(tzinfo=UTC)

        # Both builds finish; one is archived, the other stays hot: the window stays past its end.
        for build_id in builds:
            finish(api, build_id)
        sql(url, "UPDATE builds SET archive_state = 'archived', archive_time = now() WHERE id = %s", builds[0])
        ended = start + timedelta(seconds=SECONDS)
        time.sleep(max(0.0, (ended - datetime.now(UTC)).total_seconds()) + 2)
        assert name in attached(url), "dropped while one of its builds was hot"
        assert sql(url, "SELECT count(*) FROM build_logs WHERE build_id = ANY(%s)", builds) == [(4,)]

        # The other one expires: nothing in the window is hot any more.
        sql(url, "UPDATE builds SET archive_state = 'expired', expire_time = now() WHERE id = %s", builds[1])
        eventually(lambda: name not in attached(url) and events_name not in attached(url),
                   f"the janitor to drop {name}")
        assert not sql(url, "SELECT 1 FROM pg_class WHERE relname IN (%s, %s)", name, events_name)
        # Windows ahead of now stay, and the builds themselves too.
        ahead = partitions.window_name("build_logs", partitions.window_start(datetime.now(UTC), SECONDS)
                                       + timedelta(seconds=SECONDS))
        eventually(lambda: ahead in attached(url), "the window ahead")
        got = api.builds.GetBuild(build_pb2.GetBuildRequest(id=builds[0])).build
        assert got.status == build_pb2.BUILD_STATUS_COMPLETED
