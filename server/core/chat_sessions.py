"""ChatSessionService: sessions, and their messages as an ordered sub-resource."""

from __future__ import annotations

from functools import partial

from buildplatform.v1 import chat_session_pb2 as pb

from server.core import chat_sessions_wire as wire
from server.core import guard
from server.core.deps import Deps
from server.core.pagination import FETCH_BUDGET
from server.core.wire import filter_id, page_size, parse_etag, require_message, validate_id
from server.domain import access
from server.domain.access import Principal
from server.domain.builds import check_owner
from server.domain.limits import CHAT_MESSAGES_PAGE_SIZE
from server.store import chat_sessions as store
from server.store.rows import ChatMessageRow

# A session may name only a project of its own user.
_owned = partial(check_owner, field="chat_session.project_id")


async def create_chat_session(
    d: Deps, principal: Principal, request: pb.CreateChatSessionRequest
) -> pb.CreateChatSessionResponse:
    require_message("chat_session", request.HasField("chat_session"))
    values = wire.chat_session_values(request.chat_session, wire.CREATE_FIELDS)
    access.own_user(principal, values["user_id"], "chat_session.user_id")
    row = await store.create(d.db, d.new_row(values), check=_owned)
    return pb.CreateChatSessionResponse(chat_session=wire.chat_session_to_pb(row))


async def get_chat_session(
    d: Deps, principal: Principal, request: pb.GetChatSessionRequest
) -> pb.GetChatSessionResponse:
    key = validate_id("id", request.id)
    await guard.require(d, principal, "chat session", key)
    row = await store.get(d.db, key)
    return pb.GetChatSessionResponse(chat_session=wire.chat_session_to_pb(row))


async def list_chat_sessions(
    d: Deps, principal: Principal, request: pb.ListChatSessionsRequest
) -> pb.ListChatSessionsResponse:
    user_id = access.own_user(principal, filter_id("user_id", request.user_id), "user_id")
    project_id = filter_id("project_id", request.project_id)
    limit = page_size(request.page_size)
    filters = [user_id, project_id]
    after = d.tokens.decode_keyset(request.page_token, "chat_sessions", filters)
    page = await store.list_chat_sessions(
        d.db, user_id=user_id, project_id=project_id, limit=limit, budget=FETCH_BUDGET, after=after
    )
    items, token = d.tokens.respond("chat_sessions", filters, page, wire.chat_session_to_pb)
    return pb.ListChatSessionsResponse(chat_sessions=items, next_page_token=token)


async def update_chat_session(
    d: Deps, principal: Principal, request: pb.UpdateChatSessionRequest
) -> pb.UpdateChatSessionResponse:
    require_message("chat_session", request.HasField("chat_session"))
    key = validate_id("chat_session.id", request.chat_session.id)
    values = wire.chat_session_values(request.chat_session, wire.UPDATE.paths(request.update_mask))
    revision = parse_etag("chat_session.etag", request.chat_session.etag)
    await guard.require(d, principal, "chat session", key)
    row = await store.update(
        d.db, key, {**values, "update_time": d.clock()}, expected_revision=revision, check=_owned
    )
    return pb.UpdateChatSessionResponse(chat_session=wire.chat_session_to_pb(row))


async def delete_chat_session(
    d: Deps, principal: Principal, request: pb.DeleteChatSessionRequest
) -> pb.DeleteChatSessionResponse:
    key = validate_id("id", request.id)
    await guard.require(d, principal, "chat session", key)
    await store.delete(d.db, key, expected_revision=parse_etag("etag", request.etag))
    return pb.DeleteChatSessionResponse()


async def add_chat_message(
    d: Deps, principal: Principal, request: pb.AddChatMessageRequest
) -> pb.AddChatMessageResponse:
    session_id = validate_id("session_id", request.session_id)
    require_message("message", request.HasField("message"))
    values = wire.chat_message_values(request.message)
    await guard.require(d, principal, "chat session", session_id)
    row = await store.add_message(d.db, session_id, values, now=d.clock())
    return pb.AddChatMessageResponse(message=wire.chat_message_to_pb(row))


def _after(row: ChatMessageRow) -> list[object]:
    return [row.seq]


async def list_chat_messages(
    d: Deps, principal: Principal, request: pb.ListChatMessagesRequest
) -> pb.ListChatMessagesResponse:
    session_id = validate_id("session_id", request.session_id)
    limit = page_size(request.page_size, default=CHAT_MESSAGES_PAGE_SIZE)
    await guard.require(d, principal, "chat session", session_id)
    position = d.tokens.decode(request.page_token, "chat_messages", [session_id])
    after_seq = int(position[0]) if position else 0
    page = await store.list_messages(d.db, session_id, after_seq=after_seq, limit=limit, budget=FETCH_BUDGET)
    items, token = d.tokens.respond("chat_messages", [session_id], page, wire.chat_message_to_pb, position=_after)
    return pb.ListChatMessagesResponse(messages=items, next_page_token=token)
