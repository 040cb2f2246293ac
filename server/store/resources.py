"""Queries specific to users, projects, chat sessions and app specs."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from server.domain.errors import FailedPrecondition, NotFound
from server.store import crud
from server.store.crud import Page, Row
from server.store.models import app_specs, chat_messages, chat_sessions, projects, users


async def get_user_by_clerk_id(conn: AsyncConnection, clerk_id: str) -> Row:
    row = (await conn.execute(select(users).where(users.c.clerk_id == clerk_id))).mappings().first()
    if row is None:
        raise NotFound("user", clerk_id, field="clerk_id")
    return row


async def list_users(
    conn: AsyncConnection, *, email: str, limit: int, budget: int, after: tuple[datetime, str] | None
) -> Page:
    where = [users.c.email == email] if email else []
    return await crud.newest_first(conn, users, where=where, limit=limit, budget=budget, after=after)


async def list_projects(
    conn: AsyncConnection, *, user_id: str, limit: int, budget: int, after: tuple[datetime, str] | None
) -> Page:
    where = [projects.c.user_id == user_id] if user_id else []
    return await crud.newest_first(conn, projects, where=where, limit=limit, budget=budget, after=after)


async def check_project_owner(
    conn: AsyncConnection, project_id: str, user_id: str, *, field: str
) -> None:
    """NotFound unless the project (and the user) exist; FailedPrecondition
    unless user_id owns the project."""
    owner = (
        await conn.execute(select(projects.c.user_id).where(projects.c.id == project_id))
    ).scalar()
    if owner is None:
        raise NotFound("project", project_id, field=field)
    if owner != user_id:
        # A user that does not exist is NOT_FOUND, as the contract says,
        # not a project owned by "another" user.
        if (await crud.get_row(conn, users, user_id)) is None:
            raise NotFound("user", user_id, field=field.rsplit(".", 1)[0] + ".user_id")
        raise FailedPrecondition(
            f"project {project_id!r} belongs to another user than {user_id!r}",
            reason="PROJECT_OWNER_MISMATCH",
            metadata={"project_id": project_id, "user_id": user_id},
        )


async def list_chat_sessions(
    conn: AsyncConnection,
    *,
    user_id: str,
    project_id: str,
    limit: int,
    budget: int,
    after: tuple[datetime, str] | None,
) -> Page:
    where: list[ColumnElement[bool]] = []
    if user_id:
        where.append(chat_sessions.c.user_id == user_id)
    if project_id:
        where.append(chat_sessions.c.project_id == project_id)
    return await crud.newest_first(conn, chat_sessions, where=where, limit=limit, budget=budget, after=after)


async def update_chat_session(
    conn: AsyncConnection, key: str, values: Mapping[str, Any], *, expected_revision: int | None
) -> Row:
    if values.get("project_id"):
        current = await crud.must_get(conn, chat_sessions, key, "chat session")
        await check_project_owner(
            conn, values["project_id"], current["user_id"], field="chat_session.project_id"
        )
    return await crud.update_row(
        conn, chat_sessions, key, values, resource="chat session", expected_revision=expected_revision
    )


async def add_chat_message(
    conn: AsyncConnection, session_id: str, values: Mapping[str, Any], *, now: datetime
) -> Row:
    """Append a message: the session's counter gives it the next sequence number."""
    seq = (
        await conn.execute(
            update(chat_sessions)
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
        insert(chat_messages)
        .values(session_id=session_id, seq=seq, create_time=now, **values)
        .returning(*chat_messages.c)
    )
    return result.mappings().one()


async def list_chat_messages(
    conn: AsyncConnection, session_id: str, *, after_seq: int, limit: int, budget: int
) -> Page:
    """Messages in conversation order after `after_seq`."""
    if (await crud.get_row(conn, chat_sessions, session_id)) is None:
        raise NotFound("chat session", session_id, field="session_id")
    return await crud.bounded_page(
        conn,
        chat_messages,
        where=[chat_messages.c.session_id == session_id, chat_messages.c.seq > after_seq],
        order=[(chat_messages.c.seq, False)],
        limit=limit,
        budget=budget,
    )


async def create_app_spec(conn: AsyncConnection, values: Mapping[str, Any]) -> Row:
    """Insert the project's next version; the project row's counter numbers it."""
    version = (
        await conn.execute(
            update(projects)
            .where(projects.c.id == values["project_id"])
            .values(last_app_spec_version=projects.c.last_app_spec_version + 1)
            .returning(projects.c.last_app_spec_version)
        )
    ).scalar()
    if version is None:
        raise NotFound("project", values["project_id"], field="app_spec.project_id")
    # Stamped by PostgreSQL after the counter row is locked, so that
    # create_time order is version order even for concurrent creates.
    now = func.clock_timestamp()
    return await crud.insert_row(
        conn, app_specs, {**values, "version": version, "create_time": now, "update_time": now}
    )


async def list_app_specs(
    conn: AsyncConnection, *, project_id: str, limit: int, budget: int, after: tuple[datetime, str] | None
) -> Page:
    """Newest version first. Versions of a project are created in order, so
    (create_time, id) order is version order within a project."""
    where = [app_specs.c.project_id == project_id] if project_id else []
    return await crud.newest_first(conn, app_specs, where=where, limit=limit, budget=budget, after=after)
