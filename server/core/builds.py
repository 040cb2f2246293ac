"""BuildService: CRUD, the status machine's custom methods, and WatchBuild."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from functools import partial
from typing import Any

from buildplatform.v1 import build_pb2

from server.core import builds_wire as wire
from server.core import guard
from server.core.deps import Deps
from server.core.pagination import FETCH_BUDGET
from server.core.wire import (
    filter_id,
    page_size,
    parse_etag,
    require_message,
    validate_id,
)
from server.domain import access, limits
from server.domain import builds as rules
from server.domain.access import Principal
from server.domain.builds import Ownership, SpecSource
from server.domain.errors import InvalidArgument, Unauthenticated, Unavailable
from server.domain.status import TERMINAL, BuildStatus
from server.domain.validation import Checker
from server.store import builds as store
from server.store import credentials
from server.store import secrets as secret_store
from server.store.rows import BuildRow
from server.telemetry import stream_caught_up
from server.wellknown import timestamp


def _new_build(
    values: dict[str, Any], facts: Ownership, source: SpecSource | None
) -> dict[str, Any]:
    rules.check_owner(facts, field="build.project_id")
    text = rules.spec_text(values["app_spec"], values["project_id"], values["app_spec_id"], source)
    return {**values, "app_spec": text}


async def create_build(
    d: Deps, principal: Principal, request: build_pb2.CreateBuildRequest
) -> build_pb2.CreateBuildResponse:
    require_message("build", request.HasField("build"))
    values = wire.build_values(request.build, wire.CREATE_FIELDS)
    secrets = rules.secret_values("secrets", request.secrets, required=False)
    access.own_user(principal, values["user_id"], "build.user_id")
    rules.require_spec_text(values["app_spec"], values["app_spec_id"])
    values = d.new_row({
        **values, "status": BuildStatus.PENDING, "mask_shapes": not request.disable_token_shape_masking,
    })
    row = await store.create(d.db, values, decide=partial(_new_build, values), secrets=secrets)
    return build_pb2.CreateBuildResponse(build=wire.build_to_pb(row))


async def get_build(d: Deps, principal: Principal, request: build_pb2.GetBuildRequest) -> build_pb2.GetBuildResponse:
    key = validate_id("id", request.id)
    await guard.require(d, principal, "build", key)
    row = await store.get(d.db, key)
    return build_pb2.GetBuildResponse(build=wire.build_to_pb(row))


async def list_builds(
    d: Deps, principal: Principal, request: build_pb2.ListBuildsRequest
) -> build_pb2.ListBuildsResponse:
    user_id = access.own_user(principal, filter_id("user_id", request.user_id), "user_id")
    project_id = filter_id("project_id", request.project_id)
    statuses = wire.statuses_from_pb("statuses", request.statuses)
    limit = page_size(request.page_size)
    filters = [user_id, project_id, [s.value for s in statuses]]
    after = d.tokens.decode_keyset(request.page_token, "builds", filters)
    page = await store.list_builds(
        d.db, user_id=user_id, project_id=project_id, statuses=statuses, limit=limit, budget=FETCH_BUDGET, after=after
    )
    items, token = d.tokens.respond("builds", filters, page, wire.build_to_pb)
    return build_pb2.ListBuildsResponse(builds=items, next_page_token=token)


async def update_build(
    d: Deps, principal: Principal, request: build_pb2.UpdateBuildRequest
) -> build_pb2.UpdateBuildResponse:
    require_message("build", request.HasField("build"))
    key = validate_id("build.id", request.build.id)
    values = wire.build_values(request.build, wire.UPDATE.paths(request.update_mask))
    rules.check_values(values)
    rules.check_updater(principal.kind, values)
    revision = parse_etag("build.etag", request.build.etag)
    await guard.require(d, principal, "build", key)

    def check(current: BuildRow) -> None:
        rules.check_update(key, BuildStatus(current.status), values)

    locked = rules.STATUS_DEPENDENT.intersection(values)
    row = await store.update(
        d.db, key, {**values, "update_time": d.clock()}, expected_revision=revision, check=check if locked else None
    )
    return build_pb2.UpdateBuildResponse(build=wire.build_to_pb(row))


async def delete_build(
    d: Deps, principal: Principal, request: build_pb2.DeleteBuildRequest
) -> build_pb2.DeleteBuildResponse:
    key = validate_id("id", request.id)
    revision = parse_etag("etag", request.etag)
    await guard.require(d, principal, "build", key)
    await store.delete(d.db, key, expected_revision=revision)
    return build_pb2.DeleteBuildResponse()


def _reason(field: str, value: str) -> str:
    check = Checker()
    check.text(field, value, max_chars=limits.MAX_SHORT_TEXT)
    check.done()
    return value


async def _move(
    d: Deps, principal: Principal, key: str, target: BuildStatus, reason: str, revision: int | None
) -> BuildRow:
    await guard.require(d, principal, "build", key)
    now = d.clock()

    def decide(current: BuildRow) -> rules.StatusChange:
        return rules.move(BuildStatus(current.status), current.start_time is not None, target, reason=reason, now=now)

    return await store.change_status(d.db, key, decide, expected_revision=revision)


async def transition_build(
    d: Deps, principal: Principal, request: build_pb2.TransitionBuildRequest
) -> build_pb2.TransitionBuildResponse:
    key = validate_id("id", request.id)
    target = wire.status_from_pb("status", request.status)
    reason = _reason("reason", request.reason)
    revision = parse_etag("etag", request.etag)
    row = await _move(d, principal, key, target, reason, revision)
    return build_pb2.TransitionBuildResponse(build=wire.build_to_pb(row))


async def cancel_build(
    d: Deps, principal: Principal, request: build_pb2.CancelBuildRequest
) -> build_pb2.CancelBuildResponse:
    key = validate_id("id", request.id)
    reason = _reason("reason", request.reason)
    revision = parse_etag("etag", request.etag)
    row = await _move(d, principal, key, BuildStatus.CANCELLED, reason, revision)
    return build_pb2.CancelBuildResponse(build=wire.build_to_pb(row))


async def review_build(
    d: Deps, principal: Principal, request: build_pb2.ReviewBuildRequest
) -> build_pb2.ReviewBuildResponse:
    key = validate_id("id", request.id)
    check = Checker()
    decision = wire.DECISION_FROM_PB.get(request.decision)
    if decision is None:
        check.add("decision", "must be a ReviewDecision other than REVIEW_DECISION_UNSPECIFIED")
    reviewer = access.reviewer(principal, request.reviewer)
    check.text("reviewer", reviewer, required=True, max_chars=limits.MAX_NAME)
    check.text("comment", request.comment, max_chars=limits.MAX_REVIEW_COMMENT_CHARS)
    check.done()
    assert decision is not None
    revision = parse_etag("etag", request.etag)
    answer = rules.Review(decision, request.comment, reviewer)
    await guard.require(d, principal, "build", key)
    now = d.clock()

    def decide(current: BuildRow) -> rules.StatusChange:
        return rules.review(BuildStatus(current.status), current.start_time is not None, current.reviews, answer, now=now)

    row = await store.change_status(d.db, key, decide, expected_revision=revision)
    return build_pb2.ReviewBuildResponse(build=wire.build_to_pb(row))


async def watch_build(
    d: Deps, principal: Principal, request: build_pb2.WatchBuildRequest
) -> AsyncIterator[build_pb2.WatchBuildResponse]:
    key = validate_id("id", request.id)
    await guard.require(d, principal, "build", key)
    last_revision = 0
    async with d.hub.watch_build(key) as wake:
        while True:
            wake.clear()
            row = await store.get(d.db, key)
            if row.revision != last_revision:
                first = not last_revision
                last_revision = row.revision
                yield build_pb2.WatchBuildResponse(build=wire.build_to_pb(row))
                if first:
                    stream_caught_up()   # the watch's span covers its first state only
            if row.status in TERMINAL:
                return
            if d.hub.shutting_down:
                raise Unavailable("the server is shutting down: watch again on another replica")
            # Notifications are hints; re-read now and then in case one was missed.
            wait = d.heartbeat_seconds
            if principal.expire_time is not None:
                left = principal.expire_time - time.time()
                if left <= 0:
                    raise Unauthenticated("EXPIRED", "watch again with a fresh credential")
                wait = min(wait, left)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await wake.wait()


async def create_agent_token(
    d: Deps, principal: Principal, request: build_pb2.CreateAgentTokenRequest
) -> build_pb2.CreateAgentTokenResponse:
    build_id = validate_id("build_id", request.build_id)
    ttl: float = limits.AGENT_TOKEN_TTL_SECONDS
    if request.HasField("ttl"):
        ttl = request.ttl.ToTimedelta().total_seconds()
        if not limits.MIN_AGENT_TOKEN_TTL_SECONDS <= ttl <= limits.MAX_AGENT_TOKEN_TTL_SECONDS:
            raise InvalidArgument.one(
                "ttl",
                f"must be between {limits.MIN_AGENT_TOKEN_TTL_SECONDS} seconds and "
                f"{limits.MAX_AGENT_TOKEN_TTL_SECONDS // 86400} days",
            )
    token, row = await credentials.issue_agent_token(
        d.db, build_id, lifetime=timedelta(seconds=ttl), check=partial(rules.check_agent_token, build_id)
    )
    return build_pb2.CreateAgentTokenResponse(
        token=token, expire_time=timestamp(row.expire_time), token_id=str(row.id)
    )


async def revoke_agent_tokens(
    d: Deps, principal: Principal, request: build_pb2.RevokeAgentTokensRequest
) -> build_pb2.RevokeAgentTokensResponse:
    build_id = validate_id("build_id", request.build_id)
    count = await credentials.revoke_build_agent_tokens(d.db, build_id)
    return build_pb2.RevokeAgentTokensResponse(revoked_count=count)


async def register_build_secrets(
    d: Deps, principal: Principal, request: build_pb2.RegisterBuildSecretsRequest
) -> build_pb2.RegisterBuildSecretsResponse:
    build_id = validate_id("build_id", request.build_id)
    values = rules.secret_values("secrets", request.secrets, required=True)
    await guard.require(d, principal, "build", build_id)
    count = await secret_store.register(d.db, build_id, values, check=partial(rules.check_secrets, build_id))
    return build_pb2.RegisterBuildSecretsResponse(secret_count=count)
