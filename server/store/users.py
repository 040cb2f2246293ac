"""Users in PostgreSQL; each function opens its own unit of work."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import select

from server.domain.errors import NotFound
from server.store import crud
from server.store.crud import Page
from server.store.db import Database
from server.store.models import users
from server.store.rows import UserRow, typed


async def create(db: Database, values: Mapping[str, Any]) -> UserRow:
    return await crud.create(db, users, UserRow, values)


async def get(db: Database, key: str) -> UserRow:
    return await crud.fetch(db, users, key, "user", UserRow)


async def get_by_clerk_id(db: Database, clerk_id: str) -> UserRow:
    async with db.read() as conn:
        row = (await conn.execute(select(users).where(users.c.clerk_id == clerk_id))).mappings().first()
    if row is None:
        raise NotFound("user", clerk_id, field="clerk_id")
    return typed(UserRow, row)


async def list_users(
    db: Database, *, email: str, limit: int, budget: int, after: tuple[datetime, str] | None
) -> Page[UserRow]:
    where = [users.c.email == email] if email else []
    return await crud.newest_page(db, users, UserRow, where=where, limit=limit, budget=budget, after=after)


async def update(db: Database, key: str, values: Mapping[str, Any], *, expected_revision: int | None) -> UserRow:
    return await crud.modify(db, users, UserRow, key, values, resource="user", expected_revision=expected_revision)


async def delete(db: Database, key: str, *, expected_revision: int | None) -> None:
    # ON DELETE CASCADE removes what the user owns in the same transaction.
    await crud.remove(db, users, key, resource="user", expected_revision=expected_revision)
