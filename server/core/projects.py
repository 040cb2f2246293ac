"""ProjectService."""

from __future__ import annotations

from buildplatform.v1 import project_pb2

from server.core import guard
from server.core import projects_wire as wire
from server.core.deps import Deps
from server.core.pagination import FETCH_BUDGET
from server.core.wire import filter_id, page_size, parse_etag, require_message, validate_id
from server.domain import access
from server.domain.access import Principal
from server.store import projects as store


async def create_project(
    d: Deps, principal: Principal, request: project_pb2.CreateProjectRequest
) -> project_pb2.CreateProjectResponse:
    require_message("project", request.HasField("project"))
    values = wire.project_values(request.project, wire.CREATE_FIELDS)
    access.own_user(principal, values["user_id"], "project.user_id")
    row = await store.create(d.db, d.new_row(values))
    return project_pb2.CreateProjectResponse(project=wire.project_to_pb(row))


async def get_project(
    d: Deps, principal: Principal, request: project_pb2.GetProjectRequest
) -> project_pb2.GetProjectResponse:
    key = validate_id("id", request.id)
    await guard.require(d, principal, "project", key)
    row = await store.get(d.db, key)
    return project_pb2.GetProjectResponse(project=wire.project_to_pb(row))


async def list_projects(
    d: Deps, principal: Principal, request: project_pb2.ListProjectsRequest
) -> project_pb2.ListProjectsResponse:
    user_id = access.own_user(principal, filter_id("user_id", request.user_id), "user_id")
    limit = page_size(request.page_size)
    filters = [user_id]
    after = d.tokens.decode_keyset(request.page_token, "projects", filters)
    page = await store.list_projects(d.db, user_id=user_id, limit=limit, budget=FETCH_BUDGET, after=after)
    items, token = d.tokens.respond("projects", filters, page, wire.project_to_pb)
    return project_pb2.ListProjectsResponse(projects=items, next_page_token=token)


async def update_project(
    d: Deps, principal: Principal, request: project_pb2.UpdateProjectRequest
) -> project_pb2.UpdateProjectResponse:
    require_message("project", request.HasField("project"))
    key = validate_id("project.id", request.project.id)
    values = wire.project_values(request.project, wire.UPDATE.paths(request.update_mask))
    revision = parse_etag("project.etag", request.project.etag)
    await guard.require(d, principal, "project", key)
    row = await store.update(d.db, key, {**values, "update_time": d.clock()}, expected_revision=revision)
    return project_pb2.UpdateProjectResponse(project=wire.project_to_pb(row))


async def delete_project(
    d: Deps, principal: Principal, request: project_pb2.DeleteProjectRequest
) -> project_pb2.DeleteProjectResponse:
    key = validate_id("id", request.id)
    await guard.require(d, principal, "project", key)
    await store.delete(d.db, key, expected_revision=parse_etag("etag", request.etag))
    return project_pb2.DeleteProjectResponse()
