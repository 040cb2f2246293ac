"""UserService, ProjectService, ChatSessionService and AppSpecService."""

from __future__ import annotations

from typing import Any

from buildplatform.v1 import (
    app_spec_pb2,
    app_spec_pb2_grpc,
    chat_session_pb2,
    chat_session_pb2_grpc,
    project_pb2,
    project_pb2_grpc,
    user_pb2,
    user_pb2_grpc,
)

from server.domain import limits
from server.domain.validation import Checker
from server.rpc import convert
from server.rpc.convert import mask_paths, parse_etag, require_message, validate_id
from server.rpc.deps import Deps
from server.store import crud, resources
from server.store.models import app_specs, chat_sessions, projects, users

Context = Any  # grpc.aio.ServicerContext

# What a List fetches from the database per page, by estimate (the exact cut
# at RESPONSE_BYTES happens on the serialized items, server.rpc.pagination).
BUDGET = limits.RESPONSE_BYTES


def _page_size(value: int, default: int = 50, maximum: int = 1000) -> int:
    check = Checker()
    size = check.page_size("page_size", value, default=default, maximum=maximum)
    check.done()
    return size


def _filter_id(field: str, value: str) -> str:
    if value:
        validate_id(field, value)
    return value


class UserService(user_pb2_grpc.UserServiceServicer):
    def __init__(self, deps: Deps) -> None:
        self.d = deps

    async def CreateUser(self, request: user_pb2.CreateUserRequest, context: Context) -> user_pb2.CreateUserResponse:
        require_message("user", request.HasField("user"))
        values = convert.user_values(request.user, ("clerk_id", "email", "name"))
        now = self.d.clock()
        async with self.d.db.transaction() as conn:
            row = await crud.insert_row(
                conn, users, {**values, "id": self.d.new_id(), "create_time": now, "update_time": now}
            )
        return user_pb2.CreateUserResponse(user=convert.user_to_pb(row))

    async def GetUser(self, request: user_pb2.GetUserRequest, context: Context) -> user_pb2.GetUserResponse:
        key = validate_id("id", request.id)
        row = await crud.fetch(self.d.db, users, key, "user")
        return user_pb2.GetUserResponse(user=convert.user_to_pb(row))

    async def GetUserByClerkId(
        self, request: user_pb2.GetUserByClerkIdRequest, context: Context
    ) -> user_pb2.GetUserByClerkIdResponse:
        check = Checker()
        check.text("clerk_id", request.clerk_id, required=True, max_chars=limits.MAX_NAME)
        check.done()
        async with self.d.db.read() as conn:
            row = await resources.get_user_by_clerk_id(conn, request.clerk_id)
        return user_pb2.GetUserByClerkIdResponse(user=convert.user_to_pb(row))

    async def ListUsers(self, request: user_pb2.ListUsersRequest, context: Context) -> user_pb2.ListUsersResponse:
        check = Checker()
        check.text("email", request.email, max_chars=320)
        check.done()
        limit = _page_size(request.page_size)
        filters = [request.email]
        after = self.d.tokens.decode_keyset(request.page_token, "users", filters)
        async with self.d.db.read() as conn:
            page = await resources.list_users(conn, email=request.email, limit=limit, budget=BUDGET, after=after)
        items, token = self.d.tokens.respond("users", filters, page, convert.user_to_pb)
        return user_pb2.ListUsersResponse(users=items, next_page_token=token)

    async def UpdateUser(self, request: user_pb2.UpdateUserRequest, context: Context) -> user_pb2.UpdateUserResponse:
        require_message("user", request.HasField("user"))
        key = validate_id("user.id", request.user.id)
        paths = mask_paths(request.update_mask, ("email", "name"), immutable=("id", "clerk_id", "create_time", "update_time", "etag"))
        values = convert.user_values(request.user, paths)
        revision = parse_etag("user.etag", request.user.etag)
        async with self.d.db.transaction() as conn:
            row = await crud.update_row(
                conn, users, key, {**values, "update_time": self.d.clock()}, resource="user", expected_revision=revision
            )
        return user_pb2.UpdateUserResponse(user=convert.user_to_pb(row))

    async def DeleteUser(self, request: user_pb2.DeleteUserRequest, context: Context) -> user_pb2.DeleteUserResponse:
        key = validate_id("id", request.id)
        revision = parse_etag("etag", request.etag)
        async with self.d.db.transaction() as conn:
            # ON DELETE CASCADE removes what the user owns in this transaction.
            await crud.delete_row(conn, users, key, resource="user", expected_revision=revision)
        return user_pb2.DeleteUserResponse()


class ProjectService(project_pb2_grpc.ProjectServiceServicer):
    def __init__(self, deps: Deps) -> None:
        self.d = deps

    async def CreateProject(
        self, request: project_pb2.CreateProjectRequest, context: Context
    ) -> project_pb2.CreateProjectResponse:
        require_message("project", request.HasField("project"))
        values = convert.project_values(request.project, ("user_id", "name", "description"))
        now = self.d.clock()
        async with self.d.db.transaction() as conn:
            row = await crud.insert_row(
                conn, projects, {**values, "id": self.d.new_id(), "create_time": now, "update_time": now}
            )
        return project_pb2.CreateProjectResponse(project=convert.project_to_pb(row))

    async def GetProject(self, request: project_pb2.GetProjectRequest, context: Context) -> project_pb2.GetProjectResponse:
        key = validate_id("id", request.id)
        row = await crud.fetch(self.d.db, projects, key, "project")
        return project_pb2.GetProjectResponse(project=convert.project_to_pb(row))

    async def ListProjects(
        self, request: project_pb2.ListProjectsRequest, context: Context
    ) -> project_pb2.ListProjectsResponse:
        user_id = _filter_id("user_id", request.user_id)
        limit = _page_size(request.page_size)
        filters = [user_id]
        after = self.d.tokens.decode_keyset(request.page_token, "projects", filters)
        async with self.d.db.read() as conn:
            page = await resources.list_projects(conn, user_id=user_id, limit=limit, budget=BUDGET, after=after)
        items, token = self.d.tokens.respond("projects", filters, page, convert.project_to_pb)
        return project_pb2.ListProjectsResponse(projects=items, next_page_token=token)

    async def UpdateProject(
        self, request: project_pb2.UpdateProjectRequest, context: Context
    ) -> project_pb2.UpdateProjectResponse:
        require_message("project", request.HasField("project"))
        key = validate_id("project.id", request.project.id)
        paths = mask_paths(
            request.update_mask, ("name", "description"), immutable=("id", "user_id", "create_time", "update_time", "etag")
        )
        values = convert.project_values(request.project, paths)
        revision = parse_etag("project.etag", request.project.etag)
        async with self.d.db.transaction() as conn:
            row = await crud.update_row(
                conn, projects, key, {**values, "update_time": self.d.clock()}, resource="project", expected_revision=revision
            )
        return project_pb2.UpdateProjectResponse(project=convert.project_to_pb(row))

    async def DeleteProject(
        self, request: project_pb2.DeleteProjectRequest, context: Context
    ) -> project_pb2.DeleteProjectResponse:
        key = validate_id("id", request.id)
        revision = parse_etag("etag", request.etag)
        async with self.d.db.transaction() as conn:
            await crud.delete_row(conn, projects, key, resource="project", expected_revision=revision)
        return project_pb2.DeleteProjectResponse()


class ChatSessionService(chat_session_pb2_grpc.ChatSessionServiceServicer):
    def __init__(self, deps: Deps) -> None:
        self.d = deps

    async def CreateChatSession(
        self, request: chat_session_pb2.CreateChatSessionRequest, context: Context
    ) -> chat_session_pb2.CreateChatSessionResponse:
        require_message("chat_session", request.HasField("chat_session"))
        values = convert.chat_session_values(request.chat_session, ("user_id", "project_id", "title"))
        now = self.d.clock()
        async with self.d.db.transaction() as conn:
            if values["project_id"]:
                await resources.check_project_owner(
                    conn, values["project_id"], values["user_id"], field="chat_session.project_id"
                )
            row = await crud.insert_row(
                conn, chat_sessions, {**values, "id": self.d.new_id(), "create_time": now, "update_time": now}
            )
        return chat_session_pb2.CreateChatSessionResponse(chat_session=convert.chat_session_to_pb(row))

    async def GetChatSession(
        self, request: chat_session_pb2.GetChatSessionRequest, context: Context
    ) -> chat_session_pb2.GetChatSessionResponse:
        key = validate_id("id", request.id)
        row = await crud.fetch(self.d.db, chat_sessions, key, "chat session")
        return chat_session_pb2.GetChatSessionResponse(chat_session=convert.chat_session_to_pb(row))

    async def ListChatSessions(
        self, request: chat_session_pb2.ListChatSessionsRequest, context: Context
    ) -> chat_session_pb2.ListChatSessionsResponse:
        user_id = _filter_id("user_id", request.user_id)
        project_id = _filter_id("project_id", request.project_id)
        limit = _page_size(request.page_size)
        filters = [user_id, project_id]
        after = self.d.tokens.decode_keyset(request.page_token, "chat_sessions", filters)
        async with self.d.db.read() as conn:
            page = await resources.list_chat_sessions(
                conn, user_id=user_id, project_id=project_id, limit=limit, budget=BUDGET, after=after
            )
        items, token = self.d.tokens.respond("chat_sessions", filters, page, convert.chat_session_to_pb)
        return chat_session_pb2.ListChatSessionsResponse(chat_sessions=items, next_page_token=token)

    async def UpdateChatSession(
        self, request: chat_session_pb2.UpdateChatSessionRequest, context: Context
    ) -> chat_session_pb2.UpdateChatSessionResponse:
        require_message("chat_session", request.HasField("chat_session"))
        key = validate_id("chat_session.id", request.chat_session.id)
        paths = mask_paths(
            request.update_mask,
            ("title", "project_id"),
            immutable=("id", "user_id", "create_time", "update_time", "etag", "message_count"),
        )
        values = convert.chat_session_values(request.chat_session, paths)
        revision = parse_etag("chat_session.etag", request.chat_session.etag)
        async with self.d.db.transaction() as conn:
            row = await resources.update_chat_session(
                conn, key, {**values, "update_time": self.d.clock()}, expected_revision=revision
            )
        return chat_session_pb2.UpdateChatSessionResponse(chat_session=convert.chat_session_to_pb(row))

    async def DeleteChatSession(
        self, request: chat_session_pb2.DeleteChatSessionRequest, context: Context
    ) -> chat_session_pb2.DeleteChatSessionResponse:
        key = validate_id("id", request.id)
        revision = parse_etag("etag", request.etag)
        async with self.d.db.transaction() as conn:
            await crud.delete_row(conn, chat_sessions, key, resource="chat session", expected_revision=revision)
        return chat_session_pb2.DeleteChatSessionResponse()

    async def AddChatMessage(
        self, request: chat_session_pb2.AddChatMessageRequest, context: Context
    ) -> chat_session_pb2.AddChatMessageResponse:
        session_id = validate_id("session_id", request.session_id)
        require_message("message", request.HasField("message"))
        values = convert.chat_message_values(request.message)
        async with self.d.db.transaction() as conn:
            row = await resources.add_chat_message(conn, session_id, values, now=self.d.clock())
        return chat_session_pb2.AddChatMessageResponse(message=convert.chat_message_to_pb(row))

    async def ListChatMessages(
        self, request: chat_session_pb2.ListChatMessagesRequest, context: Context
    ) -> chat_session_pb2.ListChatMessagesResponse:
        session_id = validate_id("session_id", request.session_id)
        limit = _page_size(request.page_size, default=100)
        position = self.d.tokens.decode(request.page_token, "chat_messages", [session_id])
        after_seq = int(position[0]) if position else 0
        async with self.d.db.read() as conn:
            page = await resources.list_chat_messages(
                conn, session_id, after_seq=after_seq, limit=limit, budget=BUDGET
            )
        items, token = self.d.tokens.respond(
            "chat_messages", [session_id], page, convert.chat_message_to_pb, position=lambda row: [row["seq"]]
        )
        return chat_session_pb2.ListChatMessagesResponse(messages=items, next_page_token=token)


class AppSpecService(app_spec_pb2_grpc.AppSpecServiceServicer):
    def __init__(self, deps: Deps) -> None:
        self.d = deps

    async def CreateAppSpec(
        self, request: app_spec_pb2.CreateAppSpecRequest, context: Context
    ) -> app_spec_pb2.CreateAppSpecResponse:
        require_message("app_spec", request.HasField("app_spec"))
        values = convert.app_spec_values(request.app_spec, ("project_id", "content", "chat_session_id", "summary"))
        async with self.d.db.transaction() as conn:
            row = await resources.create_app_spec(conn, {**values, "id": self.d.new_id()})
        return app_spec_pb2.CreateAppSpecResponse(app_spec=convert.app_spec_to_pb(row))

    async def GetAppSpec(self, request: app_spec_pb2.GetAppSpecRequest, context: Context) -> app_spec_pb2.GetAppSpecResponse:
        key = validate_id("id", request.id)
        row = await crud.fetch(self.d.db, app_specs, key, "app spec")
        return app_spec_pb2.GetAppSpecResponse(app_spec=convert.app_spec_to_pb(row))

    async def ListAppSpecs(
        self, request: app_spec_pb2.ListAppSpecsRequest, context: Context
    ) -> app_spec_pb2.ListAppSpecsResponse:
        project_id = _filter_id("project_id", request.project_id)
        limit = _page_size(request.page_size)
        filters = [project_id]
        after = self.d.tokens.decode_keyset(request.page_token, "app_specs", filters)
        async with self.d.db.read() as conn:
            page = await resources.list_app_specs(conn, project_id=project_id, limit=limit, budget=BUDGET, after=after)
        items, token = self.d.tokens.respond("app_specs", filters, page, convert.app_spec_to_pb)
        return app_spec_pb2.ListAppSpecsResponse(app_specs=items, next_page_token=token)

    async def UpdateAppSpec(
        self, request: app_spec_pb2.UpdateAppSpecRequest, context: Context
    ) -> app_spec_pb2.UpdateAppSpecResponse:
        require_message("app_spec", request.HasField("app_spec"))
        key = validate_id("app_spec.id", request.app_spec.id)
        paths = mask_paths(
            request.update_mask,
            ("summary",),
            immutable=("id", "project_id", "version", "content", "chat_session_id", "create_time", "update_time", "etag"),
        )
        values = convert.app_spec_values(request.app_spec, paths)
        revision = parse_etag("app_spec.etag", request.app_spec.etag)
        async with self.d.db.transaction() as conn:
            row = await crud.update_row(
                conn, app_specs, key, {**values, "update_time": self.d.clock()}, resource="app spec", expected_revision=revision
            )
        return app_spec_pb2.UpdateAppSpecResponse(app_spec=convert.app_spec_to_pb(row))

    async def DeleteAppSpec(
        self, request: app_spec_pb2.DeleteAppSpecRequest, context: Context
    ) -> app_spec_pb2.DeleteAppSpecResponse:
        key = validate_id("id", request.id)
        revision = parse_etag("etag", request.etag)
        async with self.d.db.transaction() as conn:
            await crud.delete_row(conn, app_specs, key, resource="app spec", expected_revision=revision)
        return app_spec_pb2.DeleteAppSpecResponse()
