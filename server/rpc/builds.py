"""BuildService: CRUD, the status machine's custom methods, and WatchBuild."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from functools import partial
from typing import Any

from buildplatform.v1 import build_pb2, build_pb2_grpc

from server.domain import limits
from server.domain.errors import InvalidArgument, Unavailable
from server.domain.status import TERMINAL, BuildStatus, ReviewDecision, review_outcome, transition
from server.domain.validation import Checker
from server.rpc import convert
from server.rpc.convert import mask_paths, parse_etag, require_message, validate_id
from server.rpc.deps import Deps
from server.rpc.resources import BUDGET, _filter_id, _page_size
from server.store import builds, crud
from server.store.models import builds as builds_table

Context = Any


class BuildService(build_pb2_grpc.BuildServiceServicer):
    def __init__(self, deps: Deps) -> None:
        self.d = deps

    async def CreateBuild(self, request: build_pb2.CreateBuildRequest, context: Context) -> build_pb2.CreateBuildResponse:
        require_message("build", request.HasField("build"))
        values = convert.new_build_values(request.build)
        now = self.d.clock()
        async with self.d.db.transaction() as conn:
            row = await builds.create(
                conn,
                {**values, "id": self.d.new_id(), "status": BuildStatus.PENDING, "create_time": now, "update_time": now},
            )
        return build_pb2.CreateBuildResponse(build=convert.build_to_pb(row))

    async def GetBuild(self, request: build_pb2.GetBuildRequest, context: Context) -> build_pb2.GetBuildResponse:
        key = validate_id("id", request.id)
        row = await crud.fetch(self.d.db, builds_table, key, "build")
        return build_pb2.GetBuildResponse(build=convert.build_to_pb(row))

    async def ListBuilds(self, request: build_pb2.ListBuildsRequest, context: Context) -> build_pb2.ListBuildsResponse:
        user_id = _filter_id("user_id", request.user_id)
        project_id = _filter_id("project_id", request.project_id)
        statuses = convert.statuses_from_pb("statuses", request.statuses)
        limit = _page_size(request.page_size)
        filters = [user_id, project_id, [s.value for s in statuses]]
        after = self.d.tokens.decode_keyset(request.page_token, "builds", filters)
        async with self.d.db.read() as conn:
            page = await builds.list_builds(
                conn, user_id=user_id, project_id=project_id, statuses=statuses, limit=limit, budget=BUDGET, after=after
            )
        items, token = self.d.tokens.respond("builds", filters, page, convert.build_to_pb)
        return build_pb2.ListBuildsResponse(builds=items, next_page_token=token)

    async def UpdateBuild(self, request: build_pb2.UpdateBuildRequest, context: Context) -> build_pb2.UpdateBuildResponse:
        require_message("build", request.HasField("build"))
        key = validate_id("build.id", request.build.id)
        paths = mask_paths(request.update_mask, convert.BUILD_MUTABLE, immutable=convert.BUILD_IMMUTABLE)
        values = convert.build_values(request.build, paths)
        if "app_spec" in values and not values["app_spec"].strip():
            raise InvalidArgument.one("build.app_spec", "must not be empty")
        revision = parse_etag("build.etag", request.build.etag)
        async with self.d.db.transaction() as conn:
            row = await builds.update(conn, key, {**values, "update_time": self.d.clock()}, expected_revision=revision)
        return build_pb2.UpdateBuildResponse(build=convert.build_to_pb(row))

    async def DeleteBuild(self, request: build_pb2.DeleteBuildRequest, context: Context) -> build_pb2.DeleteBuildResponse:
        key = validate_id("id", request.id)
        revision = parse_etag("etag", request.etag)
        async with self.d.db.transaction() as conn:
            await builds.delete(conn, key, expected_revision=revision)
        return build_pb2.DeleteBuildResponse()

    def _reason(self, field: str, value: str) -> str:
        check = Checker()
        check.text(field, value, max_chars=limits.MAX_SHORT_TEXT)
        check.done()
        return value

    async def TransitionBuild(
        self, request: build_pb2.TransitionBuildRequest, context: Context
    ) -> build_pb2.TransitionBuildResponse:
        key = validate_id("id", request.id)
        target = convert.status_from_pb("status", request.status)
        reason = self._reason("reason", request.reason)
        revision = parse_etag("etag", request.etag)
        async with self.d.db.transaction() as conn:
            row = await builds.change_status(
                conn,
                key,
                partial(_move, target=target),
                reason=reason,
                now=self.d.clock(),
                expected_revision=revision,
            )
        return build_pb2.TransitionBuildResponse(build=convert.build_to_pb(row))

    async def CancelBuild(self, request: build_pb2.CancelBuildRequest, context: Context) -> build_pb2.CancelBuildResponse:
        key = validate_id("id", request.id)
        reason = self._reason("reason", request.reason)
        revision = parse_etag("etag", request.etag)
        async with self.d.db.transaction() as conn:
            row = await builds.change_status(
                conn,
                key,
                partial(_move, target=BuildStatus.CANCELLED),
                reason=reason,
                now=self.d.clock(),
                expected_revision=revision,
            )
        return build_pb2.CancelBuildResponse(build=convert.build_to_pb(row))

    async def ReviewBuild(self, request: build_pb2.ReviewBuildRequest, context: Context) -> build_pb2.ReviewBuildResponse:
        key = validate_id("id", request.id)
        check = Checker()
        decision = convert.DECISION_FROM_PB.get(request.decision)
        if decision is None:
            check.add("decision", "must be a ReviewDecision other than REVIEW_DECISION_UNSPECIFIED")
        check.text("reviewer", request.reviewer, required=True, max_chars=limits.MAX_NAME)
        check.text("comment", request.comment, max_chars=limits.MAX_REVIEW_COMMENT_CHARS)
        check.done()
        assert decision is not None
        revision = parse_etag("etag", request.etag)
        review = {
            "decision": decision.value,
            "comment": request.comment,
            "reviewer": request.reviewer,
        }
        async with self.d.db.transaction() as conn:
            row = await builds.change_status(
                conn,
                key,
                partial(review_outcome, decision=decision),
                reason=request.comment if decision is ReviewDecision.REJECT else "",
                now=self.d.clock(),
                expected_revision=revision,
                review=review,
            )
        return build_pb2.ReviewBuildResponse(build=convert.build_to_pb(row))

    async def WatchBuild(
        self, request: build_pb2.WatchBuildRequest, context: Context
    ) -> AsyncIterator[build_pb2.WatchBuildResponse]:
        key = validate_id("id", request.id)
        last_revision = 0
        async with self.d.hub.watch_build(key) as wake:
            while True:
                wake.clear()
                row = await crud.fetch(self.d.db, builds_table, key, "build")
                if row["revision"] != last_revision:
                    last_revision = row["revision"]
                    yield build_pb2.WatchBuildResponse(build=convert.build_to_pb(row))
                if row["status"] in TERMINAL:
                    return
                if self.d.hub.shutting_down:
                    raise Unavailable("the server is shutting down: watch again on another replica")
                # Notifications are hints; re-read now and then in case one was missed.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.d.heartbeat_seconds):
                        await wake.wait()


def _move(current: BuildStatus, *, target: BuildStatus) -> BuildStatus:
    return transition(current, target)

