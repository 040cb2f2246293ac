"""App specs (immutable, numbered versions of a project's specification)
in PostgreSQL; each function opens its own unit of work."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from server.domain.errors import NotFound
from server.store import crud
from server.store.crud import Page
from server.store.db import Database
from server.store.models import app_specs, projects
from server.store.rows import AppSpecRow, typed


async def create(db: Database, values: Mapping[str, Any]) -> AppSpecRow:
    """Insert the project's next version; the project row's counter numbers it."""
    async with db.transaction() as conn:
        version = (
            await conn.execute(
                sa.update(projects)
                .where(projects.c.id == values["project_id"])
                .values(last_app_spec_version=projects.c.last_app_spec_version + 1)
                .returning(projects.c.last_app_spec_version)
            )
        ).scalar()
        if version is None:
            raise NotFound("project", values["project_id"], field="app_spec.project_id")
        # Stamped by PostgreSQL after the counter row is locked, so that
        # create_time order is version order even for concurrent creates.
        now = sa.func.clock_timestamp()
        row = await crud.insert_row(conn, app_specs, {**values, "version": version, "create_time": now, "update_time": now})
    return typed(AppSpecRow, row)


async def get(db: Database, key: str) -> AppSpecRow:
    return await crud.fetch(db, app_specs, key, "app spec", AppSpecRow)


async def list_app_specs(
    db: Database, *, project_id: str, limit: int, budget: int, after: tuple[datetime, str] | None
) -> Page[AppSpecRow]:
    """Newest version first. Versions of a project are created in order, so
    (create_time, id) order is version order within a project."""
    where = [app_specs.c.project_id == project_id] if project_id else []
    return await crud.newest_page(db, app_specs, AppSpecRow, where=where, limit=limit, budget=budget, after=after)


async def update(db: Database, key: str, values: Mapping[str, Any], *, expected_revision: int | None) -> AppSpecRow:
    return await crud.modify(db, app_specs, AppSpecRow, key, values, resource="app spec", expected_revision=expected_revision)


async def delete(db: Database, key: str, *, expected_revision: int | None) -> None:
    await crud.remove(db, app_specs, key, resource="app spec", expected_revision=expected_revision)
