"""Who may call what, through the real server on a real port.

- Every RPC of every service is refused (PERMISSION_DENIED) to each kind of
  principal its `(buildplatform.v1.access)` option does not admit: a user,
  a build agent, a read-only and a write-only service.
- A user reaches only what it owns, an agent only its build: every RPC
  they may call is refused on another user's (another build's) resource,
  and on one that does not exist, and a refused call writes nothing.
- What they may do, they can: a user runs its own projects and builds and
  reviews as itself; an agent runs its build but never leaves a review gate.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import grpc
import pytest
from buildplatform.v1 import (
    app_spec_pb2,
    build_event_pb2,
    build_log_pb2,
    build_pb2,
    chat_session_pb2,
    project_pb2,
    user_pb2,
)
from google.protobuf import duration_pb2, message_factory

from server.app import SERVICES
from server.core.calls import rule_of
from server.domain.access import Rule, Scope
from tests.auth_support import SigningKey
from tests.e2e.expect import Failure, failure, read
from tests.support import ServerProcess, eventually, mask, open_channel, service_token, stubs

DENIED = grpc.StatusCode.PERMISSION_DENIED
MISSING = "c" + "0" * 24  # a well-formed id of nothing
METHODS = {method.name: method for service, _ in SERVICES for method in service.methods}


def call(channel: grpc.Channel, method_name: str, request: Any, timeout: float = 10) -> Any:
    """Call any RPC by name; a stream is read to its end (a follow stream's
    first message is enough to know it was admitted)."""
    method = METHODS[method_name]
    path = f"/{method.containing_service.full_name}/{method.name}"
    response = message_factory.GetMessageClass(method.output_type)
    if method.server_streaming:
        stream = channel.unary_stream(path, request_serializer=type(request).SerializeToString,
                                      response_deserializer=response.FromString)
        responses = stream(request, timeout=timeout)
        return next(iter(responses), None)
    unary = channel.unary_unary(path, request_serializer=type(request).SerializeToString,
                                response_deserializer=response.FromString)
    return unary(request, timeout=timeout)


def refusal(channel: grpc.Channel, method_name: str, request: Any) -> Failure:
    try:
        call(channel, method_name, request)
    except grpc.RpcError as error:
        return read(error)
    raise AssertionError(f"{method_name} succeeded: {request}")


# --- principals ---------------------------------------------------------------------


@dataclass
class World:
    """Bob's resources, and the callers that try them."""

    admin: SimpleNamespace
    bob: user_pb2.User
    project: project_pb2.Project
    build: build_pb2.Build
    other_build: build_pb2.Build
    session: chat_session_pb2.ChatSession
    spec: app_spec_pb2.AppSpec
    channels: dict[str, grpc.Channel]


def new_user(admin: SimpleNamespace) -> user_pb2.User:
    clerk = f"user_{uuid.uuid4().hex[:12]}"
    return admin.users.CreateUser(
        user_pb2.CreateUserRequest(user=user_pb2.User(clerk_id=clerk, email=f"{clerk}@example.com"))
    ).user


def agent_token(admin: SimpleNamespace, build_id: str, **fields: Any) -> str:
    request = build_pb2.CreateAgentTokenRequest(build_id=build_id, **fields)
    return str(admin.builds.CreateAgentToken(request).token)


@pytest.fixture(scope="module")
def admin(server: ServerProcess) -> Iterator[SimpleNamespace]:
    with server.channel() as channel:
        yield stubs(channel)


@pytest.fixture(scope="module")
def world(server: ServerProcess, admin: SimpleNamespace, session_key: SigningKey) -> Iterator[World]:
    bob = new_user(admin)
    alice = new_user(admin)
    project = admin.projects.CreateProject(
        project_pb2.CreateProjectRequest(project=project_pb2.Project(user_id=bob.id, name="Bob's app"))
    ).project

    def new_build() -> build_pb2.Build:
        return admin.builds.CreateBuild(build_pb2.CreateBuildRequest(
            build=build_pb2.Build(user_id=bob.id, project_id=project.id, app_spec="# Bob's app")
        )).build

    build, other_build = new_build(), new_build()
    session = admin.chats.CreateChatSession(chat_session_pb2.CreateChatSessionRequest(
        chat_session=chat_session_pb2.ChatSession(user_id=bob.id, project_id=project.id, title="Bob's chat")
    )).chat_session
    spec = admin.specs.CreateAppSpec(app_spec_pb2.CreateAppSpecRequest(
        app_spec=app_spec_pb2.AppSpec(project_id=project.id, content="# Bob's spec")
    )).app_spec
    tokens = {
        # Alice's session lasts the module (the cache never outlives a token).
        "user": session_key.sign(alice.clerk_id, exp=int(time.time()) + 3600),
        "agent": agent_token(admin, other_build.id),   # the agent of Bob's *other* build
        "read": service_token(server.database_url, ["read"]),
        "write": service_token(server.database_url, ["write"]),
    }
    channels = {who: open_channel(server.address, token=token) for who, token in tokens.items()}
    yield World(admin, bob, project, build, other_build, session, spec, channels)
    for channel in channels.values():
        channel.close()


def admits(rule: Rule, who: str) -> bool:
    if who in ("read", "write"):
        return Scope[who.upper()] >= rule.scope
    return rule.user if who == "user" else rule.agent


# --- every RPC, every principal it does not admit -------------------------------------

NOT_ADMITTED = [
    (name, who)
    for name, method in METHODS.items()
    for who in ("user", "agent", "read", "write")
    if not admits(rule_of(method), who)
]


def test_the_contract_leaves_every_kind_of_principal_something_it_may_not_do():
    refused = {who for _, who in NOT_ADMITTED}
    assert refused == {"user", "agent", "read", "write"}
    assert ("DeleteUser", "write") in NOT_ADMITTED and ("AppendBuildLogs", "user") in NOT_ADMITTED


@pytest.mark.parametrize(("method_name", "who"), NOT_ADMITTED, ids=[f"{m}-{w}" for m, w in NOT_ADMITTED])
def test_an_rpc_refuses_each_principal_its_contract_does_not_admit(world: World, method_name: str, who: str):
    request = message_factory.GetMessageClass(METHODS[method_name].input_type)()
    failed = refusal(world.channels[who], method_name, request)
    assert failed.code == DENIED, failed
    assert METHODS[method_name].full_name in failed.message
    assert failed.reason == "PERMISSION_DENIED"


# --- what a user or an agent may call, on what is not theirs --------------------------



# Each RPC a user may call, on Bob's resources (Alice calls), and on nothing:
# (request on Bob's, request on a missing resource or None when there is no id).
ON_BOBS: dict[str, Callable[[World, str], Any]] = {
    "GetUser": lambda w, i: user_pb2.GetUserRequest(id=i or w.bob.id),
    "GetUserByClerkId": lambda w, i: user_pb2.GetUserByClerkIdRequest(clerk_id=i or w.bob.clerk_id),
    "UpdateUser": lambda w, i: user_pb2.UpdateUserRequest(
        user=user_pb2.User(id=i or w.bob.id, email="taken@example.com"), update_mask=mask("email")),
    "CreateProject": lambda w, i: project_pb2.CreateProjectRequest(
        project=project_pb2.Project(user_id=i or w.bob.id, name="Planted")),
    "GetProject": lambda w, i: project_pb2.GetProjectRequest(id=i or w.project.id),
    "ListProjects": lambda w, i: project_pb2.ListProjectsRequest(user_id=i or w.bob.id),
    "UpdateProject": lambda w, i: project_pb2.UpdateProjectRequest(
        project=project_pb2.Project(id=i or w.project.id, name="Renamed"), update_mask=mask("name")),
    "DeleteProject": lambda w, i: project_pb2.DeleteProjectRequest(id=i or w.project.id),
    "CreateBuild": lambda w, i: build_pb2.CreateBuildRequest(
        build=build_pb2.Build(user_id=i or w.bob.id, project_id=w.project.id, app_spec="# planted")),
    "GetBuild": lambda w, i: build_pb2.GetBuildRequest(id=i or w.build.id),
    "ListBuilds": lambda w, i: build_pb2.ListBuildsRequest(user_id=i or w.bob.id),
    "DeleteBuild": lambda w, i: build_pb2.DeleteBuildRequest(id=i or w.build.id),
    "CancelBuild": lambda w, i: build_pb2.CancelBuildRequest(id=i or w.build.id),
    "ReviewBuild": lambda w, i: build_pb2.ReviewBuildRequest(
        id=i or w.build.id, decision=build_pb2.REVIEW_DECISION_REJECT),
    "WatchBuild": lambda w, i: build_pb2.WatchBuildRequest(id=i or w.build.id),
    "ListBuildLogs": lambda w, i: build_log_pb2.ListBuildLogsRequest(build_id=i or w.build.id),
    "StreamBuildLogs": lambda w, i: build_log_pb2.StreamBuildLogsRequest(build_id=i or w.build.id),
    "ReadBuildLogText": lambda w, i: build_log_pb2.ReadBuildLogTextRequest(build_id=i or w.build.id),
    "SearchBuildLogs": lambda w, i: build_log_pb2.SearchBuildLogsRequest(build_id=i or w.build.id, query="planted"),
    "ListBuildEvents": lambda w, i: build_event_pb2.ListBuildEventsRequest(build_id=i or w.build.id),
    "StreamBuildEvents": lambda w, i: build_event_pb2.StreamBuildEventsRequest(build_id=i or w.build.id),
    "CreateChatSession": lambda w, i: chat_session_pb2.CreateChatSessionRequest(
        chat_session=chat_session_pb2.ChatSession(user_id=i or w.bob.id, title="Planted")),
    "GetChatSession": lambda w, i: chat_session_pb2.GetChatSessionRequest(id=i or w.session.id),
    "ListChatSessions": lambda w, i: chat_session_pb2.ListChatSessionsRequest(user_id=i or w.bob.id),
    "UpdateChatSession": lambda w, i: chat_session_pb2.UpdateChatSessionRequest(
        chat_session=chat_session_pb2.ChatSession(id=i or w.session.id, title="Renamed"), update_mask=mask("title")),
    "DeleteChatSession": lambda w, i: chat_session_pb2.DeleteChatSessionRequest(id=i or w.session.id),
    "AddChatMessage": lambda w, i: chat_session_pb2.AddChatMessageRequest(
        session_id=i or w.session.id,
        message=chat_session_pb2.ChatMessage(role=chat_session_pb2.CHAT_ROLE_USER, content="planted")),
    "ListChatMessages": lambda w, i: chat_session_pb2.ListChatMessagesRequest(session_id=i or w.session.id),
    "CreateAppSpec": lambda w, i: app_spec_pb2.CreateAppSpecRequest(
        app_spec=app_spec_pb2.AppSpec(project_id=i or w.project.id, content="# planted")),
    "GetAppSpec": lambda w, i: app_spec_pb2.GetAppSpecRequest(id=i or w.spec.id),
    "ListAppSpecs": lambda w, i: app_spec_pb2.ListAppSpecsRequest(project_id=i or w.project.id),
    "UpdateAppSpec": lambda w, i: app_spec_pb2.UpdateAppSpecRequest(
        app_spec=app_spec_pb2.AppSpec(id=i or w.spec.id, summary="changed"), update_mask=mask("summary")),
    "DeleteAppSpec": lambda w, i: app_spec_pb2.DeleteAppSpecRequest(id=i or w.spec.id),
}

# Each RPC an agent may call, on Bob's build (the agent serves his other build).
ON_ANOTHER_BUILD: dict[str, Callable[[World, str], Any]] = {
    "GetBuild": ON_BOBS["GetBuild"],
    "WatchBuild": ON_BOBS["WatchBuild"],
    "CancelBuild": ON_BOBS["CancelBuild"],
    "ListBuildLogs": ON_BOBS["ListBuildLogs"],
    "StreamBuildLogs": ON_BOBS["StreamBuildLogs"],
    "ReadBuildLogText": ON_BOBS["ReadBuildLogText"],
    "SearchBuildLogs": ON_BOBS["SearchBuildLogs"],
    "ListBuildEvents": ON_BOBS["ListBuildEvents"],
    "StreamBuildEvents": ON_BOBS["StreamBuildEvents"],
    "UpdateBuild": lambda w, i: build_pb2.UpdateBuildRequest(
        build=build_pb2.Build(id=i or w.build.id, sandbox_id="planted"), update_mask=mask("sandbox_id")),
    "TransitionBuild": lambda w, i: build_pb2.TransitionBuildRequest(
        id=i or w.build.id, status=build_pb2.BUILD_STATUS_FAILED, reason="planted"),
    "AppendBuildLogs": lambda w, i: build_log_pb2.AppendBuildLogsRequest(
        build_id=i or w.build.id, entries=[build_log_pb2.LogEntry(level=build_log_pb2.LOG_LEVEL_INFO, message="planted")]),
    "AppendBuildEvents": lambda w, i: build_event_pb2.AppendBuildEventsRequest(
        build_id=i or w.build.id, entries=[build_event_pb2.EventEntry(type="planted")]),
    "RegisterBuildSecrets": lambda w, i: build_pb2.RegisterBuildSecretsRequest(
        build_id=i or w.build.id, secrets=["planted-secret"]),
}


def test_every_rpc_a_user_or_an_agent_may_call_is_tried_on_what_is_not_theirs():
    assert set(ON_BOBS) == {name for name, method in METHODS.items() if rule_of(method).user}
    assert set(ON_ANOTHER_BUILD) == {name for name, method in METHODS.items() if rule_of(method).agent}


def _snapshot(world: World) -> dict[str, Any]:
    """Everything of Bob's, as an admin reads it."""
    admin = world.admin
    return {
        "user": admin.users.GetUser(user_pb2.GetUserRequest(id=world.bob.id)).user,
        "projects": list(admin.projects.ListProjects(project_pb2.ListProjectsRequest(user_id=world.bob.id)).projects),
        "builds": list(admin.builds.ListBuilds(build_pb2.ListBuildsRequest(user_id=world.bob.id)).builds),
        "logs": list(admin.logs.ListBuildLogs(build_log_pb2.ListBuildLogsRequest(build_id=world.build.id)).logs),
        "events": list(admin.events.ListBuildEvents(build_event_pb2.ListBuildEventsRequest(build_id=world.build.id)).events),
        "sessions": list(admin.chats.ListChatSessions(chat_session_pb2.ListChatSessionsRequest(user_id=world.bob.id)).chat_sessions),
        "messages": list(admin.chats.ListChatMessages(chat_session_pb2.ListChatMessagesRequest(session_id=world.session.id)).messages),
        "specs": list(admin.specs.ListAppSpecs(app_spec_pb2.ListAppSpecsRequest(project_id=world.project.id)).app_specs),
    }


@pytest.mark.parametrize(("who", "table"), [("user", ON_BOBS), ("agent", ON_ANOTHER_BUILD)])
def test_what_is_not_theirs_is_refused_and_left_untouched(world: World, who: str, table: dict[str, Any]):
    before = _snapshot(world)
    for name, request in table.items():
        failed = refusal(world.channels[who], name, request(world, ""))
        assert failed.code == DENIED, (name, failed)
        assert failed.reason == "PERMISSION_DENIED", (name, failed)
    assert _snapshot(world) == before


@pytest.mark.parametrize(("who", "table"), [("user", ON_BOBS), ("agent", ON_ANOTHER_BUILD)])
def test_a_missing_resource_is_refused_the_same_way(world: World, who: str, table: dict[str, Any]):
    """AIP-211: a principal cannot tell a missing resource from somebody else's."""
    for name, request in table.items():
        failed = refusal(world.channels[who], name, request(world, MISSING))
        assert failed.code == DENIED, (name, failed)


def test_a_service_learns_that_a_resource_is_missing(world: World):
    failed = refusal(world.channels["read"], "GetBuild", build_pb2.GetBuildRequest(id=MISSING))
    assert failed.code == grpc.StatusCode.NOT_FOUND


# --- what they may do ------------------------------------------------------------------


@pytest.fixture
def alice(server: ServerProcess, admin: SimpleNamespace, session_key: SigningKey) -> Iterator[SimpleNamespace]:
    """A new user, calling with a session JWT; `user` is its User."""
    user = new_user(admin)
    with open_channel(server.address, token=session_key.sign(user.clerk_id)) as channel:
        yield SimpleNamespace(user=user, api=stubs(channel), channel=channel)


def test_a_user_works_on_what_it_owns(alice: SimpleNamespace, world: World):
    api, me = alice.api, alice.user
    assert api.users.GetUserByClerkId(user_pb2.GetUserByClerkIdRequest(clerk_id=me.clerk_id)).user.id == me.id
    project = api.projects.CreateProject(
        project_pb2.CreateProjectRequest(project=project_pb2.Project(user_id=me.id, name="Mine"))
    ).project
    build = api.builds.CreateBuild(build_pb2.CreateBuildRequest(
        build=build_pb2.Build(user_id=me.id, project_id=project.id, app_spec="# mine")
    )).build
    # Lists without a user are the caller's own.
    assert [b.id for b in api.builds.ListBuilds(build_pb2.ListBuildsRequest()).builds] == [build.id]
    assert [p.id for p in api.projects.ListProjects(project_pb2.ListProjectsRequest()).projects] == [project.id]
    assert [b.id for b in api.builds.ListBuilds(build_pb2.ListBuildsRequest(user_id=me.id)).builds] == [build.id]
    spec = api.specs.CreateAppSpec(app_spec_pb2.CreateAppSpecRequest(
        app_spec=app_spec_pb2.AppSpec(project_id=project.id, content="# v1")
    )).app_spec
    listed = api.specs.ListAppSpecs(app_spec_pb2.ListAppSpecsRequest(project_id=project.id)).app_specs
    assert [s.id for s in listed] == [spec.id]
    assert refusal(alice.channel, "ListAppSpecs", app_spec_pb2.ListAppSpecsRequest()).code == DENIED
    cancelled = api.builds.CancelBuild(build_pb2.CancelBuildRequest(id=build.id, reason="changed my mind")).build
    assert cancelled.status == build_pb2.BUILD_STATUS_CANCELLED
    session = api.chats.CreateChatSession(chat_session_pb2.CreateChatSessionRequest(
        chat_session=chat_session_pb2.ChatSession(user_id=me.id, project_id=project.id)
    )).chat_session
    api.chats.AddChatMessage(chat_session_pb2.AddChatMessageRequest(
        session_id=session.id, message=chat_session_pb2.ChatMessage(role=chat_session_pb2.CHAT_ROLE_USER, content="hi")
    ))
    # Its project cannot hold somebody else's build or session (the rules of the domain still apply).
    failed = refusal(alice.channel, "CreateBuild", build_pb2.CreateBuildRequest(
        build=build_pb2.Build(user_id=me.id, project_id=world.project.id, app_spec="# x")
    ))
    assert failed.code == grpc.StatusCode.FAILED_PRECONDITION


def _to_review(admin: SimpleNamespace, build_id: str) -> None:
    for status in ("INITIALIZING", "RUNNING", "AWAITING_DESIGN_REVIEW"):
        admin.builds.TransitionBuild(build_pb2.TransitionBuildRequest(
            id=build_id, status=build_pb2.BuildStatus.Value(f"BUILD_STATUS_{status}")
        ))


def test_a_user_reviews_its_build_as_itself(alice: SimpleNamespace, admin: SimpleNamespace):
    me = alice.user
    project = alice.api.projects.CreateProject(
        project_pb2.CreateProjectRequest(project=project_pb2.Project(user_id=me.id, name="Reviewed"))
    ).project
    build = alice.api.builds.CreateBuild(build_pb2.CreateBuildRequest(
        build=build_pb2.Build(user_id=me.id, project_id=project.id, app_spec="# reviewed")
    )).build
    _to_review(admin, build.id)
    named = build_pb2.ReviewBuildRequest(
        id=build.id, decision=build_pb2.REVIEW_DECISION_APPROVE, reviewer="somebody-else"
    )
    failed = refusal(alice.channel, "ReviewBuild", named)
    assert failed.code == grpc.StatusCode.INVALID_ARGUMENT and "reviewer" in failed.violations
    reviewed = alice.api.builds.ReviewBuild(
        build_pb2.ReviewBuildRequest(id=build.id, decision=build_pb2.REVIEW_DECISION_APPROVE, comment="ship it")
    ).build
    assert reviewed.status == build_pb2.BUILD_STATUS_RUNNING
    assert [(r.reviewer, r.comment) for r in reviewed.reviews] == [(me.id, "ship it")]


def test_a_service_names_the_reviewer(admin: SimpleNamespace, make_build):
    build = make_build()
    _to_review(admin, build.id)
    failed = failure(admin.builds.ReviewBuild,
                     build_pb2.ReviewBuildRequest(id=build.id, decision=build_pb2.REVIEW_DECISION_APPROVE))
    assert failed.code == grpc.StatusCode.INVALID_ARGUMENT and "reviewer" in failed.violations


def test_an_agent_runs_its_build_but_never_leaves_a_review_gate(server: ServerProcess, admin: SimpleNamespace, make_build):
    build = make_build()
    minted = admin.builds.CreateAgentToken(build_pb2.CreateAgentTokenRequest(build_id=build.id))
    assert minted.token.startswith("bpa_") and minted.expire_time.seconds > time.time() + 23 * 3600
    with open_channel(server.address, token=minted.token) as channel:
        agent = stubs(channel)
        assert agent.builds.GetBuild(build_pb2.GetBuildRequest(id=build.id)).build.id == build.id
        for status in ("INITIALIZING", "RUNNING"):
            agent.builds.TransitionBuild(build_pb2.TransitionBuildRequest(
                id=build.id, status=build_pb2.BuildStatus.Value(f"BUILD_STATUS_{status}")
            ))
        updated = agent.builds.UpdateBuild(build_pb2.UpdateBuildRequest(
            build=build_pb2.Build(id=build.id, sandbox_id="sbx-1", output_url="https://out.example/1"),
            update_mask=mask("sandbox_id", "output_url"),
        )).build
        assert (updated.sandbox_id, updated.output_url) == ("sbx-1", "https://out.example/1")
        failed = refusal(channel, "UpdateBuild", build_pb2.UpdateBuildRequest(
            build=build_pb2.Build(id=build.id, app_spec="# rewritten"), update_mask=mask("app_spec")
        ))
        assert failed.code == DENIED and "app_spec" in failed.message
        appended = agent.logs.AppendBuildLogs(build_log_pb2.AppendBuildLogsRequest(
            build_id=build.id, entries=[build_log_pb2.LogEntry(level=build_log_pb2.LOG_LEVEL_INFO, message="hello")]
        ))
        assert appended.last_sequence == 1
        agent.events.AppendBuildEvents(build_event_pb2.AppendBuildEventsRequest(
            build_id=build.id, entries=[build_event_pb2.EventEntry(type="file_created")]
        ))
        logs = agent.logs.ListBuildLogs(build_log_pb2.ListBuildLogsRequest(build_id=build.id)).logs
        assert [line.message for line in logs] == ["hello"]
        agent.builds.TransitionBuild(build_pb2.TransitionBuildRequest(
            id=build.id, status=build_pb2.BUILD_STATUS_AWAITING_DESIGN_REVIEW
        ))
        failed = refusal(channel, "TransitionBuild", build_pb2.TransitionBuildRequest(
            id=build.id, status=build_pb2.BUILD_STATUS_RUNNING
        ))
        assert failed.code == grpc.StatusCode.FAILED_PRECONDITION
        assert refusal(channel, "ReviewBuild", build_pb2.ReviewBuildRequest(
            id=build.id, decision=build_pb2.REVIEW_DECISION_APPROVE, reviewer="agent"
        )).code == DENIED


def test_scopes_include_the_weaker_ones_and_only_admin_deletes_users(world: World, admin: SimpleNamespace):
    write = stubs(world.channels["write"])
    user = write.users.CreateUser(user_pb2.CreateUserRequest(
        user=user_pb2.User(clerk_id=f"user_{uuid.uuid4().hex[:12]}", email="w@example.com")
    )).user
    assert write.users.GetUser(user_pb2.GetUserRequest(id=user.id)).user == user   # write reads too
    assert refusal(world.channels["write"], "DeleteUser", user_pb2.DeleteUserRequest(id=user.id)).code == DENIED
    assert admin.users.GetUser(user_pb2.GetUserRequest(id=user.id)).user == user   # the refusal wrote nothing
    admin.users.DeleteUser(user_pb2.DeleteUserRequest(id=user.id))
    failed = refusal(world.channels["read"], "GetUser", user_pb2.GetUserRequest(id=user.id))
    assert failed.code == grpc.StatusCode.NOT_FOUND


def test_the_access_log_names_the_principal_of_every_call(server: ServerProcess, alice: SimpleNamespace):
    alice.api.users.GetUser(user_pb2.GetUserRequest(id=alice.user.id))

    def logged() -> list[dict[str, Any]]:
        records = [json.loads(line) for line in server.lines if line.startswith("{")]
        return [r for r in records if r.get("logger") == "server.access" and r.get("principal") == f"user:{alice.user.id}"]

    eventually(lambda: bool(logged()), "an access log line naming the user")
    assert logged()[0]["method"] == "/buildplatform.v1.UserService/GetUser"


# --- agent tokens -----------------------------------------------------------------------


def test_agent_tokens_are_minted_for_builds_that_exist_and_run(admin: SimpleNamespace, world: World, make_build):
    failed = failure(admin.builds.CreateAgentToken, build_pb2.CreateAgentTokenRequest(build_id=MISSING))
    assert failed.code == grpc.StatusCode.NOT_FOUND
    too_long = duration_pb2.Duration(seconds=8 * 86400)
    failed = failure(admin.builds.CreateAgentToken,
                     build_pb2.CreateAgentTokenRequest(build_id=world.build.id, ttl=too_long))
    assert failed.code == grpc.StatusCode.INVALID_ARGUMENT and "ttl" in failed.violations
    finished = make_build()
    admin.builds.CancelBuild(build_pb2.CancelBuildRequest(id=finished.id))
    failed = failure(admin.builds.CreateAgentToken, build_pb2.CreateAgentTokenRequest(build_id=finished.id))
    assert failed.code == grpc.StatusCode.FAILED_PRECONDITION and failed.reason == "BUILD_FINISHED"


def _unauthenticated(channel: grpc.Channel, build_id: str) -> Failure | None:
    try:
        call(channel, "GetBuild", build_pb2.GetBuildRequest(id=build_id))
    except grpc.RpcError as error:
        return read(error)
    return None


def test_a_revoked_agent_token_is_refused(server: ServerProcess, admin: SimpleNamespace, make_build):
    build = make_build()
    token = agent_token(admin, build.id)
    with open_channel(server.address, token=token) as channel:
        assert _unauthenticated(channel, build.id) is None
        revoked = admin.builds.RevokeAgentTokens(build_pb2.RevokeAgentTokensRequest(build_id=build.id))
        assert revoked.revoked_count == 1
        # Within the verified-credential cache's lifetime (docs/security.md).
        eventually(lambda: _unauthenticated(channel, build.id) is not None, "the revocation to take effect")
        failed = _unauthenticated(channel, build.id)
        assert failed is not None and failed.code == grpc.StatusCode.UNAUTHENTICATED and failed.reason == "REVOKED"


def test_an_expired_agent_token_is_refused(server: ServerProcess, admin: SimpleNamespace, make_build):
    import psycopg

    build = make_build()
    token = agent_token(admin, build.id, ttl=duration_pb2.Duration(seconds=60))
    with psycopg.connect(server.database_url, autocommit=True) as conn:
        # A minute is the shortest lifetime; the test moves its end into the past instead of waiting.
        conn.execute("UPDATE agent_tokens SET expire_time = now() - interval '1 second' WHERE build_id = %s", (build.id,))
    with open_channel(server.address, token=token) as channel:
        failed = _unauthenticated(channel, build.id)
    assert failed is not None and failed.code == grpc.StatusCode.UNAUTHENTICATED and failed.reason == "EXPIRED"


# --- streams and expiring credentials ---------------------------------------------------


def test_a_stream_ends_when_its_credential_expires_and_resumes_with_a_fresh_one(
    server: ServerProcess, admin: SimpleNamespace, alice: SimpleNamespace, session_key: SigningKey
):
    me = alice.user
    project = alice.api.projects.CreateProject(
        project_pb2.CreateProjectRequest(project=project_pb2.Project(user_id=me.id, name="Followed"))
    ).project
    build = alice.api.builds.CreateBuild(build_pb2.CreateBuildRequest(
        build=build_pb2.Build(user_id=me.id, project_id=project.id, app_spec="# followed")
    )).build

    def append(*messages: str) -> None:
        admin.logs.AppendBuildLogs(build_log_pb2.AppendBuildLogsRequest(
            build_id=build.id, entries=[build_log_pb2.LogEntry(level=build_log_pb2.LOG_LEVEL_INFO, message=m) for m in messages]
        ))

    append("one", "two")
    seen: list[int] = []
    short = session_key.sign(me.clerk_id, exp=int(time.time()) + 3)
    with open_channel(server.address, token=short) as channel:
        stream = stubs(channel).logs.StreamBuildLogs(
            build_log_pb2.StreamBuildLogsRequest(build_id=build.id, follow=True), timeout=30
        )
        with pytest.raises(grpc.RpcError) as ended:
            for response in stream:
                seen.extend(line.sequence for line in response.logs)
                if len(seen) == 2:
                    append("three")
    failed = read(ended.value)
    assert failed.code == grpc.StatusCode.UNAUTHENTICATED and failed.reason == "EXPIRED", failed
    cursor = int(failed.metadata["after_sequence"])
    assert cursor == max(seen) == 3
    append("four")
    fresh = session_key.sign(me.clerk_id)
    with open_channel(server.address, token=fresh) as channel:
        rest = stubs(channel).logs.StreamBuildLogs(
            build_log_pb2.StreamBuildLogsRequest(build_id=build.id, after_sequence=cursor), timeout=30
        )
        seen.extend(line.sequence for response in rest for line in response.logs)
    assert seen == [1, 2, 3, 4]
