"""Chat sessions and messages on the wire: rows -> messages, and a request's
ChatSession or ChatMessage -> column values."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from buildplatform.v1 import chat_session_pb2

from server.core.wire import UpdateFields, etag, optional_text
from server.domain.limits import MAX_CHAT_METADATA_BYTES, MAX_DOCUMENT_BYTES, MAX_TITLE
from server.domain.validation import Checker
from server.store.rows import ChatMessageRow, ChatSessionRow
from server.wellknown import dict_to_struct, struct_to_dict, timestamp

UPDATE = UpdateFields.of(chat_session_pb2.ChatSession.DESCRIPTOR)
CREATE_FIELDS = ("user_id", "project_id", "title")

ROLE_TO_PB = {
    "user": chat_session_pb2.CHAT_ROLE_USER,
    "assistant": chat_session_pb2.CHAT_ROLE_ASSISTANT,
    "system": chat_session_pb2.CHAT_ROLE_SYSTEM,
    "tool": chat_session_pb2.CHAT_ROLE_TOOL,
}
ROLE_FROM_PB: dict[int, str] = {number: role for role, number in ROLE_TO_PB.items()}


def chat_session_to_pb(row: ChatSessionRow) -> chat_session_pb2.ChatSession:
    return chat_session_pb2.ChatSession(
        id=row.id,
        user_id=row.user_id,
        project_id=row.project_id,
        title=row.title,
        create_time=timestamp(row.create_time),
        update_time=timestamp(row.update_time),
        etag=etag(row.revision),
        message_count=row.message_count,
    )


def chat_session_values(session: chat_session_pb2.ChatSession, paths: Iterable[str]) -> dict[str, Any]:
    check = Checker()
    values: dict[str, Any] = {}
    for path in paths:
        if path == "user_id":
            values["user_id"] = check.id("chat_session.user_id", session.user_id)
        elif path == "project_id":
            project_id = optional_text(session, "project_id")
            values["project_id"] = check.id("chat_session.project_id", project_id, required=False) if project_id else None
        elif path == "title":
            values["title"] = check.text("chat_session.title", session.title, max_chars=MAX_TITLE)
    check.done()
    return values


def chat_message_to_pb(row: ChatMessageRow) -> chat_session_pb2.ChatMessage:
    return chat_session_pb2.ChatMessage(
        session_id=row.session_id,
        sequence=row.seq,
        role=ROLE_TO_PB[row.role],
        content=row.content,
        metadata=dict_to_struct(row.metadata),
        create_time=timestamp(row.create_time),
    )


def chat_message_values(message: chat_session_pb2.ChatMessage) -> dict[str, Any]:
    check = Checker()
    role = ROLE_FROM_PB.get(message.role)
    if role is None:
        check.add("message.role", "must be a ChatRole other than CHAT_ROLE_UNSPECIFIED")
    content = check.text("message.content", message.content, required=True, max_bytes=MAX_DOCUMENT_BYTES)
    metadata = struct_to_dict(message.metadata) if message.HasField("metadata") else None
    check.json("message.metadata", metadata, max_bytes=MAX_CHAT_METADATA_BYTES, wire_bytes=message.metadata.ByteSize())
    check.done()
    return {"role": role, "content": content, "metadata": metadata}
