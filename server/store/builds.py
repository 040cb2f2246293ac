"""Queries for builds: creation, listing, updates and status moves.

Every write to a build row also sends `pg_notify('bp_build', ...)` in the
same transaction, so WatchBuild followers and log followers on every replica
learn about it exactly when it commits.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, bindparam, func, select
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncConnection

from server.domain.errors import FailedPrecondition, NotFound
from server.domain.limits import MAX_KEPT_REVIEWS
from server.domain.status import TERMINAL, BuildStatus
from server.store import crud
from server.store.crud import Page, Row
from server.store.models import app_specs, builds
from server.store.resources import check_project_owner

BUILD_CHANNEL = "bp_build"


def notify_payload(row: Row) -> str:
    """`build_id status last_log_seq last_event_seq`: enough for a follower to
    know whether the build ended and where its logs and events end."""
    return f"{row['id']} {row['status']} {row['last_log_seq']} {row['last_event_seq']}"


async def _notify(conn: AsyncConnection, row: Row) -> None:
    await conn.execute(select(func.pg_notify(BUILD_CHANNEL, notify_payload(row))))


async def create(conn: AsyncConnection, values: Mapping[str, Any]) -> Row:
    values = dict(values)
    await check_project_owner(conn, values["project_id"], values["user_id"], field="build.project_id")
    if values.get("app_spec_id"):
        spec = await crud.get_row(conn, app_specs, values["app_spec_id"])
        if spec is None:
            raise NotFound("app spec", values["app_spec_id"], field="build.app_spec_id")
        if spec["project_id"] != values["project_id"]:
            raise FailedPrecondition(
                f"app spec {spec['id']!r} belongs to another project than {values['project_id']!r}",
                reason="APP_SPEC_PROJECT_MISMATCH",
                metadata={"app_spec_id": spec["id"], "project_id": values["project_id"]},
            )
        if not values.get("app_spec"):
            values["app_spec"] = spec["content"]
    row = await crud.insert_row(conn, builds, values)
    await _notify(conn, row)
    return row


async def list_builds(
    conn: AsyncConnection,
    *,
    user_id: str,
    project_id: str,
    statuses: Collection[BuildStatus],
    limit: int,
    budget: int,
    after: tuple[datetime, str] | None,
) -> Page:
    where: list[ColumnElement[bool]] = []
    if user_id:
        where.append(builds.c.user_id == user_id)
    if project_id:
        where.append(builds.c.project_id == project_id)
    if statuses:
        where.append(builds.c.status.in_(sorted(statuses)))
    return await crud.newest_first(conn, builds, where=where, limit=limit, budget=budget, after=after)


async def update(
    conn: AsyncConnection, key: str, values: Mapping[str, Any], *, expected_revision: int | None
) -> Row:
    if "app_spec" in values:
        current = await crud.must_get(conn, builds, key, "build", lock=True)
        crud.check_revision(current, expected_revision, "build")
        if current["status"] != BuildStatus.PENDING:
            raise FailedPrecondition(
                f"the app_spec of build {key!r} cannot change: it is {current['status']}, "
                "and app_spec can only change while the build is PENDING",
                reason="BUILD_STARTED",
                metadata={"current_status": str(current["status"])},
            )
    row = await crud.update_row(
        conn, builds, key, values, resource="build", expected_revision=expected_revision
    )
    await _notify(conn, row)
    return row


async def change_status(
    conn: AsyncConnection,
    key: str,
    decide: Callable[[BuildStatus], BuildStatus],
    *,
    reason: str,
    now: datetime,
    expected_revision: int | None,
    review: Mapping[str, Any] | None = None,
) -> Row:
    """Move a build to the status `decide(current)` returns, under a row lock.

    The lock serialises concurrent moves of one build: the second waits for
    the first to commit, then decides from the status the first left, so two
    moves never both win and neither update is lost. `decide` raises
    InvalidTransition for a refused move, and nothing is written.
    """
    current = await crud.must_get(conn, builds, key, "build", lock=True)
    crud.check_revision(current, expected_revision, "build")
    target = decide(current["status"])
    values: dict[str, Any] = {"status": target, "update_time": now, "status_reason": reason}
    if current["start_time"] is None and target is not BuildStatus.PENDING:
        values["start_time"] = now
    if target in TERMINAL:
        values["finish_time"] = now
    if review is not None:
        # The gate answered is the status the build was in before the move.
        entry = {**review, "gate": current["status"].value, "create_time": now.isoformat()}
        # The newest MAX_KEPT_REVIEWS only: a build sent back again and again
        # must stay small enough for every response that carries it.
        kept = [*current["reviews"], entry][-MAX_KEPT_REVIEWS:]
        values["reviews"] = bindparam("reviews", kept, type_=JSONB)
    row = await crud.update_row(conn, builds, key, values, resource="build", expected_revision=None)
    await _notify(conn, row)
    return row


async def delete(conn: AsyncConnection, key: str, *, expected_revision: int | None) -> None:
    await crud.delete_row(conn, builds, key, resource="build", expected_revision=expected_revision)
