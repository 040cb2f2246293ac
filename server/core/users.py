"""UserService."""

from __future__ import annotations

from buildplatform.v1 import user_pb2

from server.core import guard
from server.core import users_wire as wire
from server.core.deps import Deps
from server.core.pagination import FETCH_BUDGET
from server.core.wire import page_size, parse_etag, require_message, validate_id
from server.domain import access, limits
from server.domain.access import Owner, Principal
from server.domain.validation import Checker
from server.store import users as store


async def create_user(d: Deps, principal: Principal, request: user_pb2.CreateUserRequest) -> user_pb2.CreateUserResponse:
    require_message("user", request.HasField("user"))
    values = wire.user_values(request.user, wire.CREATE_FIELDS)
    row = await store.create(d.db, d.new_row(values))
    return user_pb2.CreateUserResponse(user=wire.user_to_pb(row))


async def get_user(d: Deps, principal: Principal, request: user_pb2.GetUserRequest) -> user_pb2.GetUserResponse:
    key = validate_id("id", request.id)
    await guard.require(d, principal, "user", key)
    row = await store.get(d.db, key)
    return user_pb2.GetUserResponse(user=wire.user_to_pb(row))


async def get_user_by_clerk_id(
    d: Deps, principal: Principal, request: user_pb2.GetUserByClerkIdRequest
) -> user_pb2.GetUserByClerkIdResponse:
    check = Checker()
    check.text("clerk_id", request.clerk_id, required=True, max_chars=limits.MAX_NAME)
    check.done()
    if principal.kind != "service":
        itself = Owner(principal.id) if request.clerk_id == principal.subject else None
        access.require_owner(principal, itself, "user with clerk_id", request.clerk_id)
    row = await store.get_by_clerk_id(d.db, request.clerk_id)
    return user_pb2.GetUserByClerkIdResponse(user=wire.user_to_pb(row))


async def list_users(d: Deps, principal: Principal, request: user_pb2.ListUsersRequest) -> user_pb2.ListUsersResponse:
    check = Checker()
    check.text("email", request.email, max_chars=limits.MAX_EMAIL)
    check.done()
    limit = page_size(request.page_size)
    filters = [request.email]
    after = d.tokens.decode_keyset(request.page_token, "users", filters)
    page = await store.list_users(d.db, email=request.email, limit=limit, budget=FETCH_BUDGET, after=after)
    items, token = d.tokens.respond("users", filters, page, wire.user_to_pb)
    return user_pb2.ListUsersResponse(users=items, next_page_token=token)


async def update_user(d: Deps, principal: Principal, request: user_pb2.UpdateUserRequest) -> user_pb2.UpdateUserResponse:
    require_message("user", request.HasField("user"))
    key = validate_id("user.id", request.user.id)
    values = wire.user_values(request.user, wire.UPDATE.paths(request.update_mask))
    revision = parse_etag("user.etag", request.user.etag)
    await guard.require(d, principal, "user", key)
    row = await store.update(d.db, key, {**values, "update_time": d.clock()}, expected_revision=revision)
    return user_pb2.UpdateUserResponse(user=wire.user_to_pb(row))


async def delete_user(d: Deps, principal: Principal, request: user_pb2.DeleteUserRequest) -> user_pb2.DeleteUserResponse:
    key = validate_id("id", request.id)
    await store.delete(d.db, key, expected_revision=parse_etag("etag", request.etag))
    return user_pb2.DeleteUserResponse()
