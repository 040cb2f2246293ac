"""Projects in PostgreSQL; each function opens its own unit of work."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from server.store import crud
from server.store.crud import Page
from server.store.db import Database
from server.store.models import projects
from server.store.rows import ProjectRow


async def create(db: Database, values: Mapping[str, Any]) -> ProjectRow:
    return await crud.create(db, projects, ProjectRow, values)


async def get(db: Database, key: str) -> ProjectRow:
    return await crud.fetch(db, projects, key, "project", ProjectRow)


async def list_projects(
    db: Database, *, user_id: str, limit: int, budget: int, after: tuple[datetime, str] | None
) -> Page[ProjectRow]:
    where = [projects.c.user_id == user_id] if user_id else []
    return await crud.newest_page(db, projects, ProjectRow, where=where, limit=limit, budget=budget, after=after)


async def update(db: Database, key: str, values: Mapping[str, Any], *, expected_revision: int | None) -> ProjectRow:
    return await crud.modify(db, projects, ProjectRow, key, values, resource="project", expected_revision=expected_revision)


async def delete(db: Database, key: str, *, expected_revision: int | None) -> None:
    await crud.remove(db, projects, key, resource="project", expected_revision=expected_revision)
