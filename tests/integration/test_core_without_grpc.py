"""The service core serves without any transport: the calls a second
transport (HTTP) will make, straight on real PostgreSQL. Requests and
responses are the protobuf messages; errors are domain errors, mapped to a
status only by the transport."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import psycopg
import pytest
from buildplatform.v1 import build_pb2, project_pb2, user_pb2

from server.core import builds, projects, users
from server.core.deps import Deps
from server.core.pagination import PageTokens
from server.domain.access import Principal
from server.domain.errors import FailedPrecondition, InvalidTransition, NotFound
from server.live.hub import Hub
from server.store.db import Database

NOW = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
P = Principal("service", "core-test", frozenset({"admin"}))


@pytest.fixture
async def deps(database_url: str) -> AsyncIterator[Deps]:
    db = Database(database_url, pool_size=1, max_overflow=0)
    await db.open()
    # A pinned clock: what a move writes is exactly what the domain decides.
    yield Deps(db=db, tokens=PageTokens("test"), hub=Hub(db, database_url), heartbeat_seconds=1.0, clock=lambda: NOW)
    await db.close()


async def _build(d: Deps) -> build_pb2.Build:
    user = (await users.create_user(d, P, user_pb2.CreateUserRequest(
        user=user_pb2.User(clerk_id=f"core-{uuid.uuid4()}", email="core@example.com")
    ))).user
    project = (await projects.create_project(d, P, project_pb2.CreateProjectRequest(
        project=project_pb2.Project(user_id=user.id, name="core")
    ))).project
    return (await builds.create_build(d, P, build_pb2.CreateBuildRequest(
        build=build_pb2.Build(user_id=user.id, project_id=project.id, app_spec="an app")
    ))).build


async def test_a_build_moves_through_the_core_with_the_times_the_domain_sets(deps: Deps):
    build = await _build(deps)
    moved = (await builds.transition_build(deps, P, build_pb2.TransitionBuildRequest(
        id=build.id, status=build_pb2.BUILD_STATUS_INITIALIZING
    ))).build
    assert moved.status == build_pb2.BUILD_STATUS_INITIALIZING
    assert moved.start_time.ToDatetime(tzinfo=UTC) == NOW
    got = (await builds.get_build(deps, P, build_pb2.GetBuildRequest(id=build.id))).build
    assert got == moved


async def test_refusals_are_domain_errors(deps: Deps):
    build = await _build(deps)
    with pytest.raises(InvalidTransition):
        await builds.transition_build(deps, P, build_pb2.TransitionBuildRequest(
            id=build.id, status=build_pb2.BUILD_STATUS_COMPLETED
        ))
    with pytest.raises(NotFound):
        await builds.get_build(deps, P, build_pb2.GetBuildRequest(id="c" + "0" * 24))
    await builds.transition_build(deps, P, build_pb2.TransitionBuildRequest(
        id=build.id, status=build_pb2.BUILD_STATUS_INITIALIZING
    ))
    with pytest.raises(FailedPrecondition) as caught:
        await builds.update_build(deps, P, build_pb2.UpdateBuildRequest(
            build=build_pb2.Build(id=build.id, app_spec="another"), update_mask={"paths": ["app_spec"]}
        ))
    assert caught.value.reason == "BUILD_STARTED"


async def test_create_build_notifies_once_in_its_statement_and_a_wrong_owner_writes_nothing(deps: Deps, database_url):
    """CreateBuild's one statement (server.store.builds.create) inserts the
    build and sends its bp_build notification together; a claim the database
    does not confirm (another user's project) writes and sends nothing, and
    the domain's refusal comes from the full transaction's real facts."""
    with psycopg.connect(database_url, autocommit=True) as listener:
        listener.execute("LISTEN bp_build")
        build = await _build(deps)
        got = [n.payload for n in listener.notifies(timeout=1.0)]
        assert got.count(f"{build.id} PENDING 0 0") == 1, got

        other = await _build(deps)   # another user, another project
        request = build_pb2.CreateBuildRequest(
            build=build_pb2.Build(user_id=build.user_id, project_id=other.project_id, app_spec="not mine"))
        with pytest.raises(FailedPrecondition) as caught:
            await builds.create_build(deps, P, request)
        assert caught.value.reason == "PROJECT_OWNER_MISMATCH"
        request.build.project_id = "c" + "1" * 24
        with pytest.raises(NotFound):
            await builds.create_build(deps, P, request)
        got = [n.payload for n in listener.notifies(timeout=0.5)]
        assert got == [f"{other.id} PENDING 0 0"]   # the other build's own creation, nothing of the refused ones
        count = listener.execute("SELECT count(*) FROM builds WHERE app_spec = 'not mine'").fetchone()
        assert count == (0,)
