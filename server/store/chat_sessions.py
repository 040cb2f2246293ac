"""Chat sessions and their messages in PostgreSQL; each function opens its
own unit of work. A session that names a project is checked by a rule of
server.domain.builds (passed in as `check`), on facts read in the same
transaction as the write."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import ColumnElement

from server.domain.builds import Ownership
from server.domain.errors import NotFound
from server.store import crud
from server.store.builds import ownership
from server.store.crud import Page
from server.store.db import Database
from server.store.models import chat_messages, chat_sessions
from server.store.rows import ChatMessageRow, ChatSessionRow, typed

Check = Callable[[Ownership], None]


async def create(db: Database, values: Mapping[str, Any], *, check: Check) -> ChatSessionRow:
    async with db.transaction() as conn:
        if values["project_id"]:
            check(await ownership(conn, values["project_id"], values["user_id"]))
        return typed(ChatSessionRow, await crud.insert_row(conn, chat_sessions, values))


async def get(db: Database, key: str) -> ChatSessionRow:
    return await crud.fetch(db, chat_sessions, key, "chat session", ChatSessionRow)


async def list_chat_sessions(
    db: Database, *, user_id: str, project_id: str, limit: int, budget: int, after: tuple[datetime, str] | None
) -> Page[ChatSessionRow]:
    where: list[ColumnElement[bool]] = []
    if user_id:
        where.append(chat_sessions.c.user_id == user_id)
    if project_id:
        where.append(chat_sessions.c.project_id == project_id)
    return await crud.newest_page(
        db, chat_sessions, ChatSessionRow, where=where, limit=limit, budget=budget, after=after
    )


async def update(
    db: Database, key: str, values: Mapping[str, Any], *, expected_revision: int | None, check: Check
) -> ChatSessionRow:
    async with db.transaction() as conn:
        if values.get("project_id"):
            current = await crud.must_get(conn, chat_sessions, key, "chat session")
            check(await ownership(conn, values["project_id"], current["user_id"]))
        row = await crud.update_row(
            conn, chat_sessions, key, values, resource="chat session", expected_revision=expected_revision
        )
    return typed(ChatSessionRow, row)


async def delete(db: Database, key: str, *, expected_revision: int | None) -> None:
    await crud.remove(db, chat_sessions, key, resource="chat session", expected_revision=expected_revision)


async def add_message(db: Database, session_id: str, values: Mapping[str, Any], *, now: datetime) -> ChatMessageRow:
    """Append a message: the session's counter gives it the next sequence number."""
    async with db.transaction() as conn:
        seq = (
            await conn.execute(
                sa.update(chat_sessions)
                .where(chat_sessions.c.id == session_id)
                # The session's representation changes (message_count,
                # update_time), so its etag must change too.
                .values(
                    message_count=chat_sessions.c.message_count + 1,
                    update_time=now,
                    revision=chat_sessions.c.revision + 1,
                )
                .returning(chat_sessions.c.message_count)
            )
        ).scalar()
        if seq is None:
            raise NotFound("chat session", session_id, field="session_id")
        result = await conn.execute(
            sa.insert(chat_messages)
            .values(session_id=session_id, seq=seq, create_time=now, **values)
            .returning(*chat_messages.c)
        )
        return typed(ChatMessageRow, result.mappings().one())


async def list_messages(
    db: Database, session_id: str, *, after_seq: int, limit: int, budget: int
) -> Page[ChatMessageRow]:
    """Messages in conversation order after `after_seq`."""
    async with db.read() as conn:
        if (await crud.get_row(conn, chat_sessions, session_id)) is None:
            raise NotFound("chat session", session_id, field="session_id")
        page = await crud.bounded_page(
            conn,
            chat_messages,
            where=[chat_messages.c.session_id == session_id, chat_messages.c.seq > after_seq],
            order=[(chat_messages.c.seq, False)],
            limit=limit,
            budget=budget,
        )
    return page.typed(ChatMessageRow)
