"""Cross-cutting: bad input gets a precise status naming the field, never
INTERNAL and never a traceback, and a rejected request writes nothing."""

from __future__ import annotations

import uuid

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
from google.protobuf import struct_pb2, timestamp_pb2

from tests.e2e.expect import failure, invalid, length_delimited, sql_count
from tests.support import mask

NUL = "a\x00b"
TABLES = ["users", "projects", "builds", "build_logs", "build_events", "chat_sessions", "chat_messages", "app_specs"]



def counts(database_url: str) -> dict[str, int]:
    return {table: sql_count(database_url, f"SELECT count(*) FROM {table}") for table in TABLES}


def clerk() -> str:
    return f"clerk_{uuid.uuid4().hex[:12]}"


# Each case: (stub attribute, method, a function of the fixtures giving the
# request, the field BadRequest must name).
NUL_CASES = [
    ("users", "CreateUser", lambda f: user_pb2.CreateUserRequest(user=user_pb2.User(clerk_id=NUL, email="a@example.com")), "user.clerk_id"),
    ("users", "CreateUser", lambda f: user_pb2.CreateUserRequest(user=user_pb2.User(clerk_id=clerk(), email="a\x00@example.com")), "user.email"),
    ("users", "CreateUser", lambda f: user_pb2.CreateUserRequest(user=user_pb2.User(clerk_id=clerk(), email="a@example.com", name=NUL)), "user.name"),
    ("users", "GetUserByClerkId", lambda f: user_pb2.GetUserByClerkIdRequest(clerk_id=NUL), "clerk_id"),
    ("users", "ListUsers", lambda f: user_pb2.ListUsersRequest(email=NUL), "email"),
    ("users", "UpdateUser", lambda f: user_pb2.UpdateUserRequest(user=user_pb2.User(id=f.user.id, name=NUL), update_mask=mask("name")), "user.name"),
    ("projects", "CreateProject", lambda f: project_pb2.CreateProjectRequest(project=project_pb2.Project(user_id=f.user.id, name=NUL)), "project.name"),
    ("projects", "CreateProject", lambda f: project_pb2.CreateProjectRequest(project=project_pb2.Project(user_id=f.user.id, name="n", description=NUL)), "project.description"),
    ("builds", "CreateBuild", lambda f: build_pb2.CreateBuildRequest(build=build_pb2.Build(user_id=f.user.id, project_id=f.project.id, app_spec=NUL)), "build.app_spec"),
    ("builds", "CreateBuild", lambda f: build_pb2.CreateBuildRequest(build=build_pb2.Build(user_id=f.user.id, project_id=f.project.id, app_spec="x", sandbox_id=NUL)), "build.sandbox_id"),
    ("builds", "UpdateBuild", lambda f: build_pb2.UpdateBuildRequest(build=build_pb2.Build(id=f.build.id, output_url=NUL), update_mask=mask("output_url")), "build.output_url"),
    ("builds", "TransitionBuild", lambda f: build_pb2.TransitionBuildRequest(id=f.build.id, status=build_pb2.BUILD_STATUS_FAILED, reason=NUL), "reason"),
    ("builds", "CancelBuild", lambda f: build_pb2.CancelBuildRequest(id=f.build.id, reason=NUL), "reason"),
    ("builds", "ReviewBuild", lambda f: build_pb2.ReviewBuildRequest(id=f.build.id, decision=build_pb2.REVIEW_DECISION_APPROVE, reviewer=NUL), "reviewer"),
    ("builds", "ReviewBuild", lambda f: build_pb2.ReviewBuildRequest(id=f.build.id, decision=build_pb2.REVIEW_DECISION_APPROVE, reviewer="r", comment=NUL), "comment"),
    ("chats", "CreateChatSession", lambda f: chat_session_pb2.CreateChatSessionRequest(chat_session=chat_session_pb2.ChatSession(user_id=f.user.id, title=NUL)), "chat_session.title"),
    ("chats", "AddChatMessage", lambda f: chat_session_pb2.AddChatMessageRequest(session_id=f.session.id, message=chat_session_pb2.ChatMessage(role=chat_session_pb2.CHAT_ROLE_USER, content=NUL)), "message.content"),
    ("specs", "CreateAppSpec", lambda f: app_spec_pb2.CreateAppSpecRequest(app_spec=app_spec_pb2.AppSpec(project_id=f.project.id, content=NUL)), "app_spec.content"),
    ("specs", "CreateAppSpec", lambda f: app_spec_pb2.CreateAppSpecRequest(app_spec=app_spec_pb2.AppSpec(project_id=f.project.id, content="x", summary=NUL)), "app_spec.summary"),
]


class Fixtures:
    def __init__(self, api, user, project, build) -> None:
        self.user, self.project, self.build = user, project, build
        self.session = api.chats.CreateChatSession(
            chat_session_pb2.CreateChatSessionRequest(chat_session=chat_session_pb2.ChatSession(user_id=user.id))
        ).chat_session
        self.spec = api.specs.CreateAppSpec(
            app_spec_pb2.CreateAppSpecRequest(app_spec=app_spec_pb2.AppSpec(project_id=project.id, content="# spec"))
        ).app_spec


@pytest.fixture
def f(api, user, project, build) -> Fixtures:
    return Fixtures(api, user, project, build)


@pytest.mark.parametrize(("service", "method", "request_of", "field"), NUL_CASES, ids=[f"{c[1]}-{c[3]}" for c in NUL_CASES])
def test_nul_character_in_text_is_invalid_argument_naming_the_field(api, f, database_url, service, method, request_of, field):
    before = counts(database_url)
    got = invalid(getattr(getattr(api, service), method), request_of(f), field)
    assert "NUL" in got.violations[field]
    assert counts(database_url) == before


def progress_update(build_id: str, fill) -> build_pb2.UpdateBuildRequest:
    request = build_pb2.UpdateBuildRequest(build=build_pb2.Build(id=build_id), update_mask=mask("progress"))
    fill(request.build.progress)
    return request


@pytest.mark.parametrize(
    ("fill", "field"),
    [
        (lambda s: s.update({"bad\x00key": 1}), "build.progress.'bad\\x00key'"),
        (lambda s: s.update({"nested": {"text": NUL}}), "build.progress.nested.text"),
        (lambda s: s.update({"items": ["ok", NUL]}), "build.progress.items[1]"),
        (lambda s: s.fields["ratio"].CopyFrom(struct_pb2.Value(number_value=float("nan"))), "build.progress.ratio"),
        (lambda s: s.fields["big"].CopyFrom(struct_pb2.Value(number_value=float("inf"))), "build.progress.big"),
        (lambda s: s.update({"list": [1, {"x": float("-inf")}]}), "build.progress.list[1].x"),
    ],
    ids=["nul-key", "nul-nested-string", "nul-in-list", "nan", "infinity", "minus-infinity-deep"],
)
def test_values_postgresql_refuses_in_a_struct_are_invalid_argument_naming_the_path(api, build, fill, field):
    got = invalid(api.builds.UpdateBuild, progress_update(build.id, fill), field)
    assert len(got.violations) == 1
    assert api.builds.GetBuild(build_pb2.GetBuildRequest(id=build.id)).build == build


def test_create_build_with_nan_progress_is_invalid_argument_and_creates_nothing(api, user, project, database_url):
    before = counts(database_url)
    request = build_pb2.Build(user_id=user.id, project_id=project.id, app_spec="x")
    request.progress.fields["p"].CopyFrom(struct_pb2.Value(number_value=float("nan")))
    invalid(api.builds.CreateBuild, build_pb2.CreateBuildRequest(build=request), "build.progress.p")
    assert counts(database_url) == before


# Every RPC that takes an etag: (stub attribute, method, request of the fixtures
# and the etag, the field BadRequest names).
ETAG_CASES = [
    ("users", "UpdateUser", lambda f, e: user_pb2.UpdateUserRequest(user=user_pb2.User(id=f.user.id, name="n", etag=e), update_mask=mask("name")), "user.etag"),
    ("users", "DeleteUser", lambda f, e: user_pb2.DeleteUserRequest(id=f.user.id, etag=e), "etag"),
    ("projects", "UpdateProject", lambda f, e: project_pb2.UpdateProjectRequest(project=project_pb2.Project(id=f.project.id, name="n", etag=e), update_mask=mask("name")), "project.etag"),
    ("projects", "DeleteProject", lambda f, e: project_pb2.DeleteProjectRequest(id=f.project.id, etag=e), "etag"),
    ("builds", "UpdateBuild", lambda f, e: build_pb2.UpdateBuildRequest(build=build_pb2.Build(id=f.build.id, sandbox_id="s", etag=e), update_mask=mask("sandbox_id")), "build.etag"),
    ("builds", "UpdateBuild", lambda f, e: build_pb2.UpdateBuildRequest(build=build_pb2.Build(id=f.build.id, app_spec="s", etag=e), update_mask=mask("app_spec")), "build.etag"),
    ("builds", "DeleteBuild", lambda f, e: build_pb2.DeleteBuildRequest(id=f.build.id, etag=e), "etag"),
    ("builds", "TransitionBuild", lambda f, e: build_pb2.TransitionBuildRequest(id=f.build.id, status=build_pb2.BUILD_STATUS_INITIALIZING, etag=e), "etag"),
    ("builds", "CancelBuild", lambda f, e: build_pb2.CancelBuildRequest(id=f.build.id, etag=e), "etag"),
    ("builds", "ReviewBuild", lambda f, e: build_pb2.ReviewBuildRequest(id=f.build.id, decision=build_pb2.REVIEW_DECISION_APPROVE, reviewer="r", etag=e), "etag"),
    ("chats", "UpdateChatSession", lambda f, e: chat_session_pb2.UpdateChatSessionRequest(chat_session=chat_session_pb2.ChatSession(id=f.session.id, title="t", etag=e), update_mask=mask("title")), "chat_session.etag"),
    ("chats", "DeleteChatSession", lambda f, e: chat_session_pb2.DeleteChatSessionRequest(id=f.session.id, etag=e), "etag"),
    ("specs", "UpdateAppSpec", lambda f, e: app_spec_pb2.UpdateAppSpecRequest(app_spec=app_spec_pb2.AppSpec(id=f.spec.id, summary="s", etag=e), update_mask=mask("summary")), "app_spec.etag"),
    ("specs", "DeleteAppSpec", lambda f, e: app_spec_pb2.DeleteAppSpecRequest(id=f.spec.id, etag=e), "etag"),
]
ETAG_IDS = [f"{c[1]}-{i}" for i, c in enumerate(ETAG_CASES)]


@pytest.mark.parametrize(("service", "method", "request_of", "field"), ETAG_CASES, ids=ETAG_IDS)
@pytest.mark.parametrize("etag", ["0", "2147483647"])
def test_an_etag_that_was_never_issued_is_aborted_and_writes_nothing(api, f, database_url, service, method, request_of, field, etag):
    before = counts(database_url)
    got = failure(getattr(getattr(api, service), method), request_of(f, etag))
    assert got.code == grpc.StatusCode.ABORTED, (got.code, got.message)
    assert counts(database_url) == before


@pytest.mark.parametrize(("service", "method", "request_of", "field"), ETAG_CASES, ids=ETAG_IDS)
@pytest.mark.parametrize("etag", ["2147483648", "9999999999", "999999999999999999", "1" * 19])
def test_an_etag_beyond_any_revision_is_invalid_argument(api, f, service, method, request_of, field, etag):
    invalid(getattr(getattr(api, service), method), request_of(f, etag), field)


@pytest.mark.parametrize("etag", ["abc", "-1", "1" * 19, " 1", "\u00b2", "\u0661"])
def test_a_malformed_etag_is_invalid_argument(api, user, etag):
    invalid(api.users.DeleteUser, user_pb2.DeleteUserRequest(id=user.id, etag=etag), "etag")
    assert api.users.GetUser(user_pb2.GetUserRequest(id=user.id)).user == user


@pytest.mark.parametrize("page_size", [-1, 1001, 2**31 - 1, -(2**31)])
def test_page_size_out_of_range_is_invalid_argument_for_every_list(api, page_size):
    invalid(api.users.ListUsers, user_pb2.ListUsersRequest(page_size=page_size), "page_size")
    invalid(api.projects.ListProjects, project_pb2.ListProjectsRequest(page_size=page_size), "page_size")
    invalid(api.builds.ListBuilds, build_pb2.ListBuildsRequest(page_size=page_size), "page_size")
    invalid(api.chats.ListChatSessions, chat_session_pb2.ListChatSessionsRequest(page_size=page_size), "page_size")
    invalid(api.specs.ListAppSpecs, app_spec_pb2.ListAppSpecsRequest(page_size=page_size), "page_size")


def test_a_page_token_of_one_list_is_invalid_argument_for_another(api, user, make_build):
    for _ in range(2):
        make_build()
    token = api.builds.ListBuilds(build_pb2.ListBuildsRequest(user_id=user.id, page_size=1)).next_page_token
    invalid(api.projects.ListProjects, project_pb2.ListProjectsRequest(user_id=user.id, page_token=token), "page_token")
    invalid(api.chats.ListChatSessions, chat_session_pb2.ListChatSessionsRequest(user_id=user.id, page_token=token), "page_token")


@pytest.mark.parametrize("token", ["x", "a.b", "....", "eyJmIjoiIn0.AAAA", "\u00e9.\u00e9", "=" * 40])
def test_a_forged_page_token_is_invalid_argument(api, token):
    invalid(api.builds.ListBuilds, build_pb2.ListBuildsRequest(page_token=token), "page_token")


def test_out_of_range_enum_values_are_invalid_argument(api, build, f):
    invalid(api.builds.TransitionBuild, build_pb2.TransitionBuildRequest(id=build.id, status=99), "status")
    invalid(api.builds.ListBuilds, build_pb2.ListBuildsRequest(statuses=[42]), "statuses[0]")
    invalid(api.builds.ReviewBuild, build_pb2.ReviewBuildRequest(id=build.id, decision=7, reviewer="r"), "decision")
    invalid(
        api.chats.AddChatMessage,
        chat_session_pb2.AddChatMessageRequest(session_id=f.session.id, message=chat_session_pb2.ChatMessage(role=-3, content="x")),
        "message.role",
    )


def test_oversized_text_is_invalid_argument(api, user, project):
    invalid(
        api.builds.CreateBuild,
        build_pb2.CreateBuildRequest(build=build_pb2.Build(user_id=user.id, project_id=project.id, app_spec="x" * ((1 << 20) + 1))),
        "build.app_spec",
    )
    invalid(
        api.builds.CreateBuild,
        build_pb2.CreateBuildRequest(build=build_pb2.Build(user_id=user.id, project_id=project.id, app_spec="x", output_url="u" * 4097)),
        "build.output_url",
    )


def test_a_request_that_is_not_a_protobuf_message_is_invalid_argument(channel):
    for method, raw in [
        ("/buildplatform.v1.UserService/GetUser", b"\x0a\x02\xff\xfe"),  # a string field with bad UTF-8
        ("/buildplatform.v1.BuildService/ListBuilds", b"\xff\xff\xff"),  # corrupt wire format
    ]:
        call = channel.unary_unary(method)
        with pytest.raises(grpc.RpcError) as caught:
            call(raw, timeout=10)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
        assert "Traceback" not in caught.value.details() and "<class" not in caught.value.details()


def test_every_error_of_a_bad_request_is_reported_in_one_answer(api, user):
    got = failure(
        api.builds.CreateBuild,
        build_pb2.CreateBuildRequest(build=build_pb2.Build(user_id="nope", project_id="", app_spec=NUL, output_url="u" * 4097)),
    )
    assert got.code == grpc.StatusCode.INVALID_ARGUMENT
    assert {"build.user_id", "build.project_id", "build.app_spec", "build.output_url"} <= set(got.violations)


def test_rejected_requests_write_nothing(api, f, database_url):
    before = counts(database_url)
    build_before = api.builds.GetBuild(build_pb2.GetBuildRequest(id=f.build.id)).build
    rejected = [
        (api.users.CreateUser, user_pb2.CreateUserRequest(user=user_pb2.User(clerk_id=f.user.clerk_id, email="dup@example.com"))),
        (api.projects.CreateProject, project_pb2.CreateProjectRequest(project=project_pb2.Project(user_id="c" + "z" * 24, name="x"))),
        (api.builds.TransitionBuild, build_pb2.TransitionBuildRequest(id=f.build.id, status=build_pb2.BUILD_STATUS_COMPLETED)),
        (api.builds.ReviewBuild, build_pb2.ReviewBuildRequest(id=f.build.id, decision=build_pb2.REVIEW_DECISION_APPROVE, reviewer="r")),
        (api.specs.CreateAppSpec, app_spec_pb2.CreateAppSpecRequest(app_spec=app_spec_pb2.AppSpec(project_id=f.project.id, content="x", chat_session_id="c" + "y" * 24))),
        (api.chats.AddChatMessage, chat_session_pb2.AddChatMessageRequest(session_id=f.session.id, message=chat_session_pb2.ChatMessage(content="no role"))),
        (api.users.DeleteUser, user_pb2.DeleteUserRequest(id=f.user.id, etag="12345")),
        (api.projects.DeleteProject, project_pb2.DeleteProjectRequest(id=f.project.id, etag="12345")),
    ]
    for call, request in rejected:
        got = failure(call, request)
        assert got.code not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN), (request, got)
    assert counts(database_url) == before
    assert api.builds.GetBuild(build_pb2.GetBuildRequest(id=f.build.id)).build == build_before
    assert api.projects.GetProject(project_pb2.GetProjectRequest(id=f.project.id)).project == f.project
    assert api.chats.GetChatSession(chat_session_pb2.GetChatSessionRequest(id=f.session.id)).chat_session == f.session
    assert api.specs.CreateAppSpec(
        app_spec_pb2.CreateAppSpecRequest(app_spec=app_spec_pb2.AppSpec(project_id=f.project.id, content="x"))
    ).app_spec.version == f.spec.version + 1


def test_required_messages_missing_are_invalid_argument(api):
    invalid(api.projects.CreateProject, project_pb2.CreateProjectRequest(), "project")
    invalid(api.builds.CreateBuild, build_pb2.CreateBuildRequest(), "build")
    invalid(api.builds.UpdateBuild, build_pb2.UpdateBuildRequest(update_mask=mask("progress")), "build")
    invalid(api.chats.CreateChatSession, chat_session_pb2.CreateChatSessionRequest(), "chat_session")
    invalid(api.specs.CreateAppSpec, app_spec_pb2.CreateAppSpecRequest(), "app_spec")
    invalid(api.chats.AddChatMessage, chat_session_pb2.AddChatMessageRequest(session_id="c" + "0" * 24), "message")


MIN_SECONDS, MAX_SECONDS = -62_135_596_800, 253_402_300_799  # 0001-01-01, 9999-12-31T23:59:59


def since(build_id: str, seconds: int, nanos: int = 0):
    time = timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos)
    return [
        (lambda api: api.logs.StreamBuildLogs, build_log_pb2.StreamBuildLogsRequest(build_id=build_id, since_time=time)),
        (lambda api: api.events.StreamBuildEvents, build_event_pb2.StreamBuildEventsRequest(build_id=build_id, since_time=time)),
    ]


@pytest.mark.parametrize(
    ("seconds", "nanos", "field"),
    [
        (MAX_SECONDS + 1, 0, "since_time"),
        (MIN_SECONDS - 1, 0, "since_time"),
        (2**63 - 1, 0, "since_time"),
        (-(2**63), 0, "since_time"),
        (0, -1, "since_time.nanos"),
        (0, 1_000_000_000, "since_time.nanos"),
        (0, 2**31 - 1, "since_time.nanos"),
    ],
)
def test_a_timestamp_outside_its_documented_range_is_invalid_argument(api, build, seconds, nanos, field):
    for stub, request in since(build.id, seconds, nanos):
        invalid(lambda r, stub=stub: list(stub(api)(r, timeout=10)), request, field)


@pytest.mark.parametrize(("seconds", "nanos"), [(MIN_SECONDS, 0), (MAX_SECONDS, 999_999_999), (0, 0)])
def test_a_timestamp_at_the_ends_of_its_range_is_accepted(api, build, seconds, nanos):
    api.logs.AppendBuildLogs(build_log_pb2.AppendBuildLogsRequest(build_id=build.id, entries=[build_log_pb2.LogEntry(level=build_log_pb2.LOG_LEVEL_INFO, message="m")]))
    logs = build_log_pb2.StreamBuildLogsRequest(build_id=build.id, since_time=timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos))
    lines = [line.message for response in api.logs.StreamBuildLogs(logs, timeout=10) for line in response.logs]
    assert lines == (["m"] if seconds <= 0 else [])


# Requests with thousands of bad values, or a bad value of hundreds of KiB:
# the answer must still be INVALID_ARGUMENT, read by a client with gRPC's
# default limits (8 KiB of metadata), not RESOURCE_EXHAUSTED.
def _long_key_progress(build_id: str) -> build_pb2.UpdateBuildRequest:
    return progress_update(build_id, lambda s: s.update({"k" * 200_000 + "\x00": 1}))


MANY_VIOLATIONS = [
    ("logs", "AppendBuildLogs", lambda f: build_log_pb2.AppendBuildLogsRequest(build_id=f.build.id, entries=[build_log_pb2.LogEntry(message="x" * 1000)] * 5000), "entries[0].level"),
    ("events", "AppendBuildEvents", lambda f: build_event_pb2.AppendBuildEventsRequest(build_id=f.build.id, entries=[build_event_pb2.EventEntry(type="BAD TYPE")] * 5000), "entries[0].type"),
    ("builds", "ListBuilds", lambda f: build_pb2.ListBuildsRequest(statuses=[99] * 5000), "statuses[0]"),
    ("logs", "ListBuildLogs", lambda f: build_log_pb2.ListBuildLogsRequest(build_id=f.build.id, levels=[-1] * 5000), "levels[0]"),
    ("events", "StreamBuildEvents", lambda f: build_event_pb2.StreamBuildEventsRequest(build_id=f.build.id, types=["?" * 1000] * 2000), "types[0]"),
    ("builds", "UpdateBuild", lambda f: build_pb2.UpdateBuildRequest(build=build_pb2.Build(id=f.build.id), update_mask=mask(*(["p" * 100_000] * 30))), "update_mask.paths[0]"),
    ("builds", "UpdateBuild", lambda f: _long_key_progress(f.build.id), None),
]


@pytest.mark.parametrize(("service", "method", "request_of", "field"), MANY_VIOLATIONS, ids=[f"{c[1]}-{i}" for i, c in enumerate(MANY_VIOLATIONS)])
def test_many_or_huge_violations_are_invalid_argument_with_the_first_ones_and_a_count(api, f, database_url, service, method, request_of, field):
    before = counts(database_url)
    stub = getattr(getattr(api, service), method)
    call = (lambda r: list(stub(r, timeout=30))) if method.startswith("Stream") else stub
    got = failure(call, request_of(f))
    assert got.code == grpc.StatusCode.INVALID_ARGUMENT, (got.code, got.message[:300])
    assert len(got.violations) <= 21
    assert all(len(name) <= 100 and len(text) <= 200 for name, text in got.violations.items())
    if field is not None:
        assert field in got.violations
        assert "more invalid fields are not listed" in got.violations["request"]
    assert counts(database_url) == before


def _token_lists(api, f):
    """Every List RPC: (name, call, request with a page token field to fill)."""
    return {
        "ListUsers": (api.users.ListUsers, lambda t: user_pb2.ListUsersRequest(page_size=1, page_token=t)),
        "ListProjects": (api.projects.ListProjects, lambda t: project_pb2.ListProjectsRequest(page_size=1, page_token=t)),
        "ListBuilds": (api.builds.ListBuilds, lambda t: build_pb2.ListBuildsRequest(page_size=1, page_token=t)),
        "ListChatSessions": (api.chats.ListChatSessions, lambda t: chat_session_pb2.ListChatSessionsRequest(page_size=1, page_token=t)),
        "ListChatMessages": (api.chats.ListChatMessages, lambda t: chat_session_pb2.ListChatMessagesRequest(session_id=f.session.id, page_size=1, page_token=t)),
        "ListAppSpecs": (api.specs.ListAppSpecs, lambda t: app_spec_pb2.ListAppSpecsRequest(page_size=1, page_token=t)),
        "ListBuildLogs": (api.logs.ListBuildLogs, lambda t: build_log_pb2.ListBuildLogsRequest(build_id=f.build.id, page_size=1, page_token=t)),
        "ListBuildEvents": (api.events.ListBuildEvents, lambda t: build_event_pb2.ListBuildEventsRequest(build_id=f.build.id, page_size=1, page_token=t)),
    }


def test_a_page_token_of_one_list_is_invalid_argument_on_every_other_list(api, f, make_build):
    make_build()
    api.specs.CreateAppSpec(app_spec_pb2.CreateAppSpecRequest(app_spec=app_spec_pb2.AppSpec(project_id=f.project.id, content="v2")))
    api.projects.CreateProject(project_pb2.CreateProjectRequest(project=project_pb2.Project(user_id=f.user.id, name="second")))
    api.chats.CreateChatSession(chat_session_pb2.CreateChatSessionRequest(chat_session=chat_session_pb2.ChatSession(user_id=f.user.id)))
    for content in ("one", "two"):
        api.chats.AddChatMessage(chat_session_pb2.AddChatMessageRequest(session_id=f.session.id, message=chat_session_pb2.ChatMessage(role=chat_session_pb2.CHAT_ROLE_USER, content=content)))
    info = build_log_pb2.LogEntry(level=build_log_pb2.LOG_LEVEL_INFO, message="m")
    api.logs.AppendBuildLogs(build_log_pb2.AppendBuildLogsRequest(build_id=f.build.id, entries=[info, info]))
    api.events.AppendBuildEvents(build_event_pb2.AppendBuildEventsRequest(build_id=f.build.id, entries=[build_event_pb2.EventEntry(type="step")] * 2))
    lists = _token_lists(api, f)
    tokens = {}
    for name, (call, request) in lists.items():
        tokens[name] = call(request("")).next_page_token
        assert tokens[name], name
        call(request(tokens[name]))  # each token works where it was issued
    for issued_by, token in tokens.items():
        for name, (call, request) in lists.items():
            if name != issued_by:
                got = invalid(call, request(token), "page_token")
                assert "other filters" in got.violations["page_token"] or "issued" in got.violations["page_token"], (issued_by, name)


# A Struct is larger on the wire than as JSON (a number of [0, 0, ...] is 2
# bytes of JSON, 11 of Struct): the limit holds for both, so that the item a
# response carries stays within what the limits promise.
def test_a_struct_small_as_json_but_large_serialized_is_invalid_argument(api, build, f):
    zeros = {"zeros": [0] * 60_000}  # 120 KB of JSON, 660 KB serialized
    request = progress_update(build.id, lambda s: s.update(zeros))
    assert request.build.progress.ByteSize() > 256 * 1024
    got = invalid(api.builds.UpdateBuild, request, "build.progress")
    assert "serialized" in got.violations["build.progress"]
    message = chat_session_pb2.ChatMessage(role=chat_session_pb2.CHAT_ROLE_USER, content="x")
    message.metadata.update({"zeros": [0] * 7_000})  # 14 KB of JSON, 77 KB serialized
    invalid(api.chats.AddChatMessage, chat_session_pb2.AddChatMessageRequest(session_id=f.session.id, message=message), "message.metadata")


def _nested_struct_bytes(depth: int) -> bytes:
    """A Struct {"a": {"a": ... {"b": 2.0}}} `depth` levels deep, encoded by
    hand: the Python runtime refuses to build one deeper than it can parse."""
    number_2 = b"\x11" + b"\x00" * 7 + b"\x40"  # Value.number_value = 2.0
    struct = length_delimited(1, length_delimited(1, b"b") + length_delimited(2, number_2))
    for _ in range(depth):
        struct = length_delimited(1, length_delimited(1, b"a") + length_delimited(2, length_delimited(5, struct)))
    return struct


@pytest.mark.parametrize("depth", [40, 100, 5000])
def test_a_struct_nested_deeper_than_protobuf_parses_is_invalid_argument(channel, build, depth):
    update = channel.unary_unary("/buildplatform.v1.BuildService/UpdateBuild")
    # UpdateBuildRequest{build: {id, progress: <struct>}, update_mask: {paths: ["progress"]}}
    request = length_delimited(1, length_delimited(1, build.id.encode()) + length_delimited(8, _nested_struct_bytes(depth)))
    request += length_delimited(2, length_delimited(1, b"progress"))
    with pytest.raises(grpc.RpcError) as caught:
        update(request, timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()


def test_the_deepest_struct_a_client_can_send_round_trips(api, build):
    value: dict = {"leaf": "x"}
    for _ in range(25):
        value = {"a": value}
    updated = api.builds.UpdateBuild(progress_update(build.id, lambda s: s.update(value))).build
    assert api.builds.GetBuild(build_pb2.GetBuildRequest(id=build.id)).build.progress == updated.progress
    listed = api.builds.ListBuilds(build_pb2.ListBuildsRequest(user_id=build.user_id)).builds
    assert [b.progress for b in listed if b.id == build.id] == [updated.progress]
