"""No orphan objects: deleting a build, a project or a user, and expiring an
archived build, leave nothing of theirs in the archive; a local directory and
a real S3 protocol server (moto) are listed after the janitor ran.

The server's archiver archives each build (ARCHIVE_AFTER_SECONDS=0); the test
adds a stray object of an attempt that never committed under its prefix.
The hour a deleted build's prefix waits is passed in the test database."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import psycopg
import pytest
from buildplatform.v1 import build_pb2, project_pb2, user_pb2

from server import migrate
from server.archive.objects import ObjectStore, object_key, open_store
from tests.e2e.streaming import append, finish, lines, start_running
from tests.support import MotoS3, create_database, drop_database, eventually, running_server, stubs


def sql(url: str, query: str, *params: object) -> list[tuple]:  # type: ignore[type-arg]
    with psycopg.connect(url, autocommit=True) as conn:
        cursor = conn.execute(query, params)
        return cursor.fetchall() if cursor.description else []


@pytest.fixture(params=["local", "s3"])
def archive(request: pytest.FixtureRequest, tmp_path: Path, postgres: str) -> Iterator[SimpleNamespace]:
    """A database, a server whose janitor and archiver look every 0.2 s (the
    archiver's default, 10 s, made each build of this file wait for it),
    and the server's store opened in the test too."""
    env: dict[str, str] = {}
    if request.param == "local":
        url = str(tmp_path / "archive")
        store = open_store(url)
    else:
        s3: MotoS3 = request.getfixturevalue("s3")
        url = f"s3://{s3.bucket()}/bp"
        store = open_store(url, config=s3.config, allow_http=True)
        env = s3.env
    database_url = create_database(postgres, prefix="bp_cleanup")
    migrate.upgrade(database_url)
    try:
        with (running_server(database_url, ARCHIVE_URL=url, JANITOR_SECONDS="0.2", ARCHIVE_AFTER_SECONDS="0",
                             ARCHIVE_INTERVAL_SECONDS="0.2", **env) as server,
              server.channel() as channel):
            yield SimpleNamespace(api=stubs(channel), store=store, db=database_url, server=server)
    finally:
        drop_database(postgres, database_url)


def run(coroutine):  # type: ignore[no-untyped-def]
    return asyncio.run(coroutine)


def keys(store: ObjectStore, build_id: str) -> set[str]:
    return {info.key for info in run(store.list(f"builds/{build_id}/", timeout=10))}


def archived_build(a: SimpleNamespace, user_id: str, project_id: str) -> str:
    """A finished build with objects in the store as an archived one has."""
    build = a.api.builds.CreateBuild(build_pb2.CreateBuildRequest(
        build=build_pb2.Build(user_id=user_id, project_id=project_id, app_spec="# archived"))).build
    start_running(a.api, build.id)
    append(a.api, build.id, lines(*(f"compiling unit {i}" for i in range(50))))
    finish(a.api, build.id)
    eventually(lambda: sql(a.db, "SELECT archive_state FROM builds WHERE id = %s", build.id) == [("archived",)],
               "the archiver to archive the build")
    archived = keys(a.store, build.id)
    assert archived and all(key.endswith(".bpc") for key in archived)
    stray = object_key(build.id, "log", "deadbeef00000000")
    run(a.store.put(stray, [b"an attempt that never committed"], timeout=10))
    assert keys(a.store, build.id) == archived | {stray}
    return str(build.id)


def new_owner(a: SimpleNamespace) -> tuple[str, str]:
    clerk = f"user_{uuid.uuid4().hex[:12]}"
    user = a.api.users.CreateUser(user_pb2.CreateUserRequest(
        user=user_pb2.User(clerk_id=clerk, email=f"{clerk}@example.com"))).user
    project = a.api.projects.CreateProject(project_pb2.CreateProjectRequest(
        project=project_pb2.Project(user_id=user.id, name="Archived"))).project
    return str(user.id), str(project.id)


def an_hour_passes(a: SimpleNamespace) -> None:
    sql(a.db, "UPDATE archive_garbage SET not_before = now() - interval '1 second', "
              "queue_time = queue_time - interval '1 hour'")


def test_deleting_builds_projects_and_users_leaves_no_object_behind(archive):
    a = archive
    user_id, project_id = new_owner(a)
    by_build = archived_build(a, user_id, project_id)
    kept = archived_build(a, user_id, project_id)
    a.api.builds.DeleteBuild(build_pb2.DeleteBuildRequest(id=by_build))

    other_project = a.api.projects.CreateProject(project_pb2.CreateProjectRequest(
        project=project_pb2.Project(user_id=user_id, name="Goes"))).project
    by_project = [archived_build(a, user_id, other_project.id) for _ in range(2)]
    a.api.projects.DeleteProject(project_pb2.DeleteProjectRequest(id=other_project.id))

    doomed_user, doomed_project = new_owner(a)
    by_user = [archived_build(a, doomed_user, doomed_project) for _ in range(2)]
    a.api.users.DeleteUser(user_pb2.DeleteUserRequest(id=doomed_user))

    gone = [by_build, *by_project, *by_user]
    # Within the hour an archiving attempt may still be uploading: nothing is touched yet.
    time.sleep(1)
    assert all(keys(a.store, build_id) for build_id in gone)

    an_hour_passes(a)
    eventually(lambda: not sql(a.db, "SELECT 1 FROM archive_garbage"), "the janitor to drain the queue")
    for build_id in gone:
        assert keys(a.store, build_id) == set(), build_id
    assert len(keys(a.store, kept)) >= 2
    assert {info.key.split("/")[1] for info in run(a.store.list("builds/", timeout=10))} == {kept}


def test_expiring_an_archived_build_deletes_its_objects_and_its_chunk_index(archive):
    a = archive
    user_id, project_id = new_owner(a)
    build_id = archived_build(a, user_id, project_id)
    assert sql(a.db, "SELECT count(*) FROM archive_chunks WHERE build_id = %s", build_id) != [(0,)]
    sql(a.db, "UPDATE builds SET finish_time = now() - interval '91 days' WHERE id = %s", build_id)

    eventually(lambda: sql(a.db, "SELECT archive_state FROM builds WHERE id = %s", build_id) == [("expired",)],
               "the build to expire")
    eventually(lambda: keys(a.store, build_id) == set(), "the janitor to delete the expired build's objects")
    assert sql(a.db, "SELECT count(*) FROM archive_chunks WHERE build_id = %s", build_id) == [(0,)]
    assert sql(a.db, "SELECT status FROM builds WHERE id = %s", build_id) == [("COMPLETED",)]
    assert not sql(a.db, "SELECT 1 FROM archive_garbage WHERE build_id = %s", build_id)
