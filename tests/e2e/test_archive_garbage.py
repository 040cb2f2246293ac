"""Deleting builds, projects and users queues their archive prefixes
(migration 0005's statement trigger on builds), in the deleting transaction."""

from __future__ import annotations

import uuid
from types import SimpleNamespace

import psycopg
from buildplatform.v1 import build_pb2, project_pb2, user_pb2

from tests.e2e.streaming import finish


def new_user(api: SimpleNamespace) -> user_pb2.User:
    clerk = f"user_{uuid.uuid4().hex[:12]}"
    return api.users.CreateUser(
        user_pb2.CreateUserRequest(user=user_pb2.User(clerk_id=clerk, email=f"{clerk}@example.com"))).user


def new_project(api: SimpleNamespace, user_id: str) -> project_pb2.Project:
    return api.projects.CreateProject(
        project_pb2.CreateProjectRequest(project=project_pb2.Project(user_id=user_id, name="Garbage"))).project


def new_build(api: SimpleNamespace, user_id: str, project_id: str, *, finished: bool = True) -> str:
    build = api.builds.CreateBuild(build_pb2.CreateBuildRequest(
        build=build_pb2.Build(user_id=user_id, project_id=project_id, app_spec="# garbage"))).build
    if finished:
        finish(api, build.id)
    return str(build.id)


def queued(database_url: str, build_ids: list[str]) -> dict[str, float]:
    """prefix -> seconds from queueing to not_before, of these builds."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT prefix, extract(epoch FROM not_before - queue_time) FROM archive_garbage WHERE build_id = ANY(%s)",
            (build_ids,),
        ).fetchall()
    return {prefix: float(delay) for prefix, delay in rows}


def test_deleting_a_finished_build_queues_its_prefix_for_an_hour_later(api, database_url, user, project):
    gone = new_build(api, user.id, project.id)
    kept = new_build(api, user.id, project.id)
    api.builds.DeleteBuild(build_pb2.DeleteBuildRequest(id=gone))
    assert queued(database_url, [gone, kept]) == {f"builds/{gone}/": 3600.0}


def test_a_build_deleted_before_it_finished_had_nothing_to_archive(api, database_url, user, project):
    pending = new_build(api, user.id, project.id, finished=False)
    api.builds.DeleteBuild(build_pb2.DeleteBuildRequest(id=pending))
    assert queued(database_url, [pending]) == {}


def test_deleting_a_project_or_a_user_queues_every_finished_build_they_take_with_them(api, database_url):
    owner = new_user(api)
    first, second = new_project(api, owner.id), new_project(api, owner.id)
    of_first = [new_build(api, owner.id, first.id) for _ in range(3)]
    running = new_build(api, owner.id, first.id, finished=False)
    of_second = [new_build(api, owner.id, second.id) for _ in range(2)]

    api.projects.DeleteProject(project_pb2.DeleteProjectRequest(id=first.id))
    assert set(queued(database_url, [*of_first, running, *of_second])) == {f"builds/{b}/" for b in of_first}

    api.users.DeleteUser(user_pb2.DeleteUserRequest(id=owner.id))
    assert set(queued(database_url, of_first + of_second)) == {f"builds/{b}/" for b in of_first + of_second}


def test_a_rolled_back_delete_queues_nothing(api, database_url, user, project):
    build_id = new_build(api, user.id, project.id)
    with psycopg.connect(database_url) as conn:
        conn.execute("DELETE FROM builds WHERE id = %s", (build_id,))
        assert conn.execute("SELECT count(*) FROM archive_garbage WHERE build_id = %s", (build_id,)).fetchone() == (1,)
        conn.rollback()
    assert queued(database_url, [build_id]) == {}
