"""AppSpecService: immutable, numbered versions of a project's specification."""

from __future__ import annotations

from buildplatform.v1 import app_spec_pb2 as pb

from server.core import app_specs_wire as wire
from server.core import guard
from server.core.deps import Deps
from server.core.pagination import FETCH_BUDGET
from server.core.wire import filter_id, page_size, parse_etag, require_message, validate_id
from server.domain.access import Principal
from server.domain.errors import PermissionDenied
from server.store import app_specs as store


async def create_app_spec(d: Deps, principal: Principal, request: pb.CreateAppSpecRequest) -> pb.CreateAppSpecResponse:
    require_message("app_spec", request.HasField("app_spec"))
    values = wire.app_spec_values(request.app_spec, wire.CREATE_FIELDS)
    await guard.require(d, principal, "project", values["project_id"])
    row = await store.create(d.db, {**values, "id": d.new_id()})
    return pb.CreateAppSpecResponse(app_spec=wire.app_spec_to_pb(row))


async def get_app_spec(d: Deps, principal: Principal, request: pb.GetAppSpecRequest) -> pb.GetAppSpecResponse:
    key = validate_id("id", request.id)
    await guard.require(d, principal, "app spec", key)
    row = await store.get(d.db, key)
    return pb.GetAppSpecResponse(app_spec=wire.app_spec_to_pb(row))


async def list_app_specs(d: Deps, principal: Principal, request: pb.ListAppSpecsRequest) -> pb.ListAppSpecsResponse:
    project_id = filter_id("project_id", request.project_id)
    if principal.kind != "service":
        if not project_id:
            raise PermissionDenied(
                f"{principal.label()} may list only the app specs of its own projects: name one in project_id",
                permission="project_id",
            )
        await guard.require(d, principal, "project", project_id)
    limit = page_size(request.page_size)
    filters = [project_id]
    after = d.tokens.decode_keyset(request.page_token, "app_specs", filters)
    page = await store.list_app_specs(d.db, project_id=project_id, limit=limit, budget=FETCH_BUDGET, after=after)
    items, token = d.tokens.respond("app_specs", filters, page, wire.app_spec_to_pb)
    return pb.ListAppSpecsResponse(app_specs=items, next_page_token=token)


async def update_app_spec(d: Deps, principal: Principal, request: pb.UpdateAppSpecRequest) -> pb.UpdateAppSpecResponse:
    require_message("app_spec", request.HasField("app_spec"))
    key = validate_id("app_spec.id", request.app_spec.id)
    values = wire.app_spec_values(request.app_spec, wire.UPDATE.paths(request.update_mask))
    revision = parse_etag("app_spec.etag", request.app_spec.etag)
    await guard.require(d, principal, "app spec", key)
    row = await store.update(d.db, key, {**values, "update_time": d.clock()}, expected_revision=revision)
    return pb.UpdateAppSpecResponse(app_spec=wire.app_spec_to_pb(row))


async def delete_app_spec(d: Deps, principal: Principal, request: pb.DeleteAppSpecRequest) -> pb.DeleteAppSpecResponse:
    key = validate_id("id", request.id)
    await guard.require(d, principal, "app spec", key)
    await store.delete(d.db, key, expected_revision=parse_etag("etag", request.etag))
    return pb.DeleteAppSpecResponse()
