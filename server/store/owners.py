"""Who owns a resource, for authorization (server.domain.access): one
primary-key read on the hot-path pool, None when there is no such resource."""

from __future__ import annotations

from typing import Literal

from server.domain.access import Owner
from server.store.db import Database

Resource = Literal["user", "project", "build", "chat session", "app spec"]

_QUERIES: dict[Resource, str] = {
    "user": "SELECT id, '' FROM users WHERE id = %s",
    "project": "SELECT user_id, '' FROM projects WHERE id = %s",
    "build": "SELECT user_id, id FROM builds WHERE id = %s",
    "chat session": "SELECT user_id, '' FROM chat_sessions WHERE id = %s",
    "app spec": "SELECT p.user_id, '' FROM app_specs a JOIN projects p ON p.id = a.project_id WHERE a.id = %s",
}


async def owner(db: Database, resource: Resource, key: str) -> Owner | None:
    async with db.connection() as conn:
        cur = await conn.execute(_QUERIES[resource], (key,))
        row = await cur.fetchone()
    return None if row is None else Owner(str(row[0]), str(row[1]))
