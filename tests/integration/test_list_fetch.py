"""A List page is bounded in bytes in the database fetch too, not only in
the response: rows of a MiB are never loaded by the page-size-full to be
cut afterwards, and compression (a large, repetitive jsonb stored in a few
KiB) cannot fool the estimate."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from buildplatform.v1 import app_spec_pb2, build_pb2

from server.domain.limits import MAX_DOCUMENT_BYTES, RESPONSE_BYTES
from server.store import app_specs, builds
from server.store.db import Database
from tests.e2e.expect import sql_count
from tests.support import opened_database


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    async with opened_database(database_url, pool_size=1) as database:
        yield database


async def test_app_specs_of_a_megabyte_are_fetched_one_budget_at_a_time(api, project, db):
    for i in range(8):
        api.specs.CreateAppSpec(
            app_spec_pb2.CreateAppSpecRequest(app_spec=app_spec_pb2.AppSpec(project_id=project.id, content=f"{i}" * MAX_DOCUMENT_BYTES))
        )
    page = await app_specs.list_app_specs(db, project_id=project.id, limit=1000, budget=RESPONSE_BYTES, after=None)
    # The first row fills the budget; the second crosses it and is cut later.
    assert len(page.rows) <= 2
    assert page.candidates == 8


async def test_compressed_progress_is_measured_at_its_real_size(api, user, project, database_url, db):
    for _ in range(12):
        build = build_pb2.Build(user_id=user.id, project_id=project.id, app_spec="x")
        build.progress.update({"log": "p" * 250_000})  # 250 KB of JSON, a few KiB once compressed
        api.builds.CreateBuild(build_pb2.CreateBuildRequest(build=build))
    stored = sql_count(database_url, "SELECT max(pg_column_size(progress)) FROM builds WHERE user_id = %s", user.id)
    assert stored < 50_000, "the progress should be stored compressed for this test to mean something"
    page = await builds.list_builds(
        db, user_id=user.id, project_id="", statuses=(), limit=1000, budget=RESPONSE_BYTES, after=None
    )
    assert len(page.rows) <= RESPONSE_BYTES // 250_000 + 1
    assert page.candidates == 12
