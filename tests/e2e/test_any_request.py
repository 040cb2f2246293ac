"""Property: no request to any RPC is answered INTERNAL or UNKNOWN (nor
RESOURCE_EXHAUSTED, what a default client reports when the error details
outgrow its metadata limit), and a refused request writes nothing.

Requests are built from the generated descriptors (every method of every
service of buildplatform.v1), by field type, with edge values: integers at
and beyond their type's ends, enums out of range, NUL, text past every
limit, nested Structs with NaN and infinities, Timestamps out of range,
page tokens issued by other Lists, ids of other kinds of resource.

Two properties, each sent to a real server on a real port, on a database
of its own: for every field of every request (nested ones included), a
plausible request (ids of resources that exist, so that it reaches the
store) with that one field replaced by edge values; and, for every RPC,
requests random field by field. A cheap fingerprint of the database (row
counts, sums of revisions, counters) taken before and after a refused call
must not change.

Deterministic (derandomize, no example database) and bounded: 5 examples
per field and 15 per RPC, about 25 s in all.
"""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import psycopg
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
from google.api import field_behavior_pb2
from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir

from server import migrate
from tests.e2e.expect import read
from tests.support import create_database, drop_database, running_server, stubs

# Hypothesis caches what it learns under its home directory: keep that out
# of the working tree (the example database is off, see settings below).
set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "buildplatform-hypothesis")

# A failing example of MiBs is printed in full, with a warning that it is.
pytestmark = pytest.mark.filterwarnings("ignore:Generating overly large repr")

MODULES = [user_pb2, project_pb2, build_pb2, build_log_pb2, build_event_pb2, chat_session_pb2, app_spec_pb2]
METHODS: list[MethodDescriptor] = [
    method
    for module in MODULES
    for service in module.DESCRIPTOR.services_by_name.values()
    for method in service.methods
]
MUTATED_EXAMPLES = 6  # per field of each request, nested fields included
RANDOM_EXAMPLES = 15  # per RPC
STREAM_DEADLINE = 0.1  # a follow stream is read this long, then dropped
UNARY_DEADLINE = 30.0
TERMINAL = "('COMPLETED', 'FAILED', 'CANCELLED')"


# --- the world the requests refer to ------------------------------------------


@dataclass(frozen=True)
class Ref:
    """Resolved when the request is sent: the id of a live resource of `role`,
    or a page token issued by the List `role` names."""

    role: str


@dataclass
class World:
    ids: dict[str, str] = field(default_factory=dict)

    def resolve(self, ref: Ref) -> str:
        return self.ids.get(ref.role, "")


ID_ROLES = ["user", "project", "build", "review_build", "chat_session", "app_spec"]
LISTS = ["ListUsers", "ListProjects", "ListBuilds", "ListChatSessions", "ListChatMessages", "ListAppSpecs", "ListBuildLogs", "ListBuildEvents"]


def seed(api: Any, world: World) -> None:
    """Create one of each resource (twice where a page token needs two) and
    remember their ids and a page token of every List."""
    users = []
    for _ in range(2):
        clerk = f"fuzz-{uuid.uuid4().hex[:12]}"
        users.append(api.users.CreateUser(user_pb2.CreateUserRequest(user=user_pb2.User(clerk_id=clerk, email=f"{clerk}@example.com"))).user)
    user = users[-1]
    projects = [
        api.projects.CreateProject(project_pb2.CreateProjectRequest(project=project_pb2.Project(user_id=user.id, name=n))).project
        for n in ("one", "two")
    ]
    project = projects[-1]
    builds = [
        api.builds.CreateBuild(build_pb2.CreateBuildRequest(build=build_pb2.Build(user_id=user.id, project_id=project.id, app_spec="# app"))).build
        for _ in range(2)
    ]
    review = builds[0]
    for status in (build_pb2.BUILD_STATUS_INITIALIZING, build_pb2.BUILD_STATUS_RUNNING, build_pb2.BUILD_STATUS_AWAITING_DESIGN_REVIEW):
        api.builds.TransitionBuild(build_pb2.TransitionBuildRequest(id=review.id, status=status))
    sessions = [
        api.chats.CreateChatSession(chat_session_pb2.CreateChatSessionRequest(chat_session=chat_session_pb2.ChatSession(user_id=user.id, project_id=project.id))).chat_session
        for _ in range(2)
    ]
    session = sessions[-1]
    for text in ("hello", "world"):
        api.chats.AddChatMessage(chat_session_pb2.AddChatMessageRequest(session_id=session.id, message=chat_session_pb2.ChatMessage(role=chat_session_pb2.CHAT_ROLE_USER, content=text)))
    specs = [
        api.specs.CreateAppSpec(app_spec_pb2.CreateAppSpecRequest(app_spec=app_spec_pb2.AppSpec(project_id=project.id, content="# spec", chat_session_id=session.id))).app_spec
        for _ in range(2)
    ]
    for build_id in (builds[1].id, review.id):
        line = build_log_pb2.LogEntry(level=build_log_pb2.LOG_LEVEL_INFO, message="line")
        api.logs.AppendBuildLogs(build_log_pb2.AppendBuildLogsRequest(build_id=build_id, entries=[line, line]))
        event = build_event_pb2.EventEntry(type="step")
        api.events.AppendBuildEvents(build_event_pb2.AppendBuildEventsRequest(build_id=build_id, entries=[event, event]))
    world.ids = {
        "user": user.id, "clerk": clerk, "project": project.id, "build": builds[1].id, "review_build": review.id,
        "chat_session": session.id, "app_spec": specs[-1].id,
    }
    build = builds[1].id
    firsts = {
        "ListUsers": api.users.ListUsers(user_pb2.ListUsersRequest(page_size=1)),
        "ListProjects": api.projects.ListProjects(project_pb2.ListProjectsRequest(page_size=1, user_id=user.id)),
        "ListBuilds": api.builds.ListBuilds(build_pb2.ListBuildsRequest(page_size=1, user_id=user.id)),
        "ListChatSessions": api.chats.ListChatSessions(chat_session_pb2.ListChatSessionsRequest(page_size=1, user_id=user.id)),
        "ListChatMessages": api.chats.ListChatMessages(chat_session_pb2.ListChatMessagesRequest(page_size=1, session_id=session.id)),
        "ListAppSpecs": api.specs.ListAppSpecs(app_spec_pb2.ListAppSpecsRequest(page_size=1, project_id=project.id)),
        "ListBuildLogs": api.logs.ListBuildLogs(build_log_pb2.ListBuildLogsRequest(page_size=1, build_id=build)),
        "ListBuildEvents": api.events.ListBuildEvents(build_event_pb2.ListBuildEventsRequest(page_size=1, build_id=build)),
    }
    world.ids.update({name: response.next_page_token for name, response in firsts.items()})


def world_is_intact(conn: psycopg.Connection[Any], world: World) -> bool:
    """Whether every seeded resource still exists in a state deep calls need."""
    if not world.ids:
        return False
    row = conn.execute(
        "SELECT (SELECT count(*) FROM users WHERE id = %(user)s)"
        f" + (SELECT count(*) FROM builds WHERE id = %(build)s AND status NOT IN {TERMINAL})"
        " + (SELECT count(*) FROM builds WHERE id = %(review_build)s AND status = 'AWAITING_DESIGN_REVIEW')"
        " + (SELECT count(*) FROM projects WHERE id = %(project)s)"
        " + (SELECT count(*) FROM chat_sessions WHERE id = %(chat_session)s)"
        " + (SELECT count(*) FROM app_specs WHERE id = %(app_spec)s)",
        world.ids,
    ).fetchone()
    return row is not None and row[0] == 6


FINGERPRINT = "SELECT " + ", ".join(
    f"(SELECT row(count(*), {extra}) FROM {table})::text"
    for table, extra in [
        ("users", "sum(revision)"),
        ("projects", "sum(revision), sum(last_app_spec_version)"),
        ("builds", "sum(revision), sum(last_log_seq), sum(last_event_seq)"),
        ("build_logs", "max(seq)"),
        ("build_events", "max(seq)"),
        ("chat_sessions", "sum(revision), sum(message_count)"),
        ("chat_messages", "max(seq)"),
        ("app_specs", "sum(revision), max(version)"),
    ]
)


def fingerprint(conn: psycopg.Connection[Any]) -> tuple[Any, ...]:
    """Row counts, revision sums and counters of every table: any write moves one."""
    row = conn.execute(FINGERPRINT).fetchone()
    assert row is not None
    return tuple(row)


# --- values by field type -------------------------------------------------------

INT32 = (-(2**31), 2**31 - 1)
# The ends of every integer type, and of what the fields mean (a Timestamp's
# seconds and nanos, a page size, a revision).
INT_EDGES = [
    2**63 - 1, 2**31 - 1, -1, -(2**31), 2**31, 2**32, 2**53 + 1, -(2**63), 2**64 - 1,
    1000, 1001, 5001, 999_999_999, 1_000_000_000, 253_402_300_800, -62_135_596_801,
]
INT64 = (-(2**63), 2**63 - 1)
INT_TYPES = {
    FieldDescriptor.TYPE_INT32: INT32, FieldDescriptor.TYPE_SINT32: INT32, FieldDescriptor.TYPE_SFIXED32: INT32,
    FieldDescriptor.TYPE_INT64: INT64, FieldDescriptor.TYPE_SINT64: INT64, FieldDescriptor.TYPE_SFIXED64: INT64,
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1), FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1), FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}

TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=30)
PLAIN = st.text(st.characters(exclude_categories=("Cs", "Cc")), min_size=1, max_size=20)
SMALL_EDGE_STRINGS = [
    "", " ", "\x00", "a\x00b", "*", "-1", "0", "2147483648", "9" * 19, "c" + "z" * 24, "C" * 25, "a.b", "=" * 12,
    "eyJmIjoiIn0.AAAA", "'; DROP TABLE users; --", "\ufeff", "\u202e", "x@y", "a@b@c", "step", "Step!",
]
BIG_EDGE_STRINGS = [
    "x" * 201, "x" * 321, "x" * 501, "x" * 2001, "x" * 4097, "x" * 20_001, "x" * 65_537,
    "\U0001f600" * 16_385, "\u00e9" * 600_000, "\U0001f600" * 262_145,
]
FINITE_AND_NOT = [float("nan"), float("inf"), float("-inf"), 1e308, -1e308, 5e-324, -0.0, 2.0**53 + 1, 0.1]


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": 1}
    for _ in range(depth):
        value = {"a": value}
    return value


JSON_LEAF = st.one_of(
    st.none(), st.booleans(), st.sampled_from(FINITE_AND_NOT), st.floats(allow_nan=True, allow_infinity=True),
    TEXT, st.sampled_from(SMALL_EDGE_STRINGS),
)
JSON_KEY = st.one_of(TEXT, st.sampled_from(["\x00", "a\x00", "k" * 5000, ""]))
STRUCT_SMALL_EDGE = st.dictionaries(
    JSON_KEY,
    st.recursive(JSON_LEAF, lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(JSON_KEY, inner, max_size=3)), max_leaves=12),
    max_size=4,
)
STRUCT_EDGE = st.one_of(
    STRUCT_SMALL_EDGE,
    st.sampled_from([nested(20), nested(29), {"big": "b" * 300_000}, {"many": list(range(20_000))}, {f"k{i}": i for i in range(3000)}]),
)
STRUCT_PLAIN = st.dictionaries(st.sampled_from(["step", "pct", "note"]), st.one_of(st.integers(0, 100), PLAIN), max_size=3)


def string_role(message: Descriptor, name: str) -> str | None:
    """Which seeded id a string field plausibly holds."""
    if name in ("user_id",):
        return "user"
    if name == "project_id":
        return "project"
    if name == "build_id":
        return "build"
    if name in ("session_id", "chat_session_id"):
        return "chat_session"
    if name == "app_spec_id":
        return "app_spec"
    if name == "id":
        for prefix, role in [("AppSpec", "app_spec"), ("ChatSession", "chat_session"), ("User", "user"), ("Project", "project")]:
            if prefix in message.name:
                return role
        if "Build" in message.name:
            return "build"
    return None


ALL_FIELD_NAMES = sorted({f.name for module in MODULES for m in module.DESCRIPTOR.message_types_by_name.values() for f in m.fields})
EVENT_TYPES = ["step", "build.started", "deploy:done", "a-b_c"]


def plausible_scalar(message: Descriptor, fd: FieldDescriptor) -> st.SearchStrategy[Any]:
    if fd.type == FieldDescriptor.TYPE_STRING:
        role = string_role(message, fd.name)
        if role is not None:
            roles = ["build", "review_build"] if role == "build" else [role]
            return st.sampled_from([Ref(r) for r in roles])
        if fd.name == "page_token":  # none, or one this List issued
            return st.sampled_from(["", Ref(message.name.removesuffix("Request"))])
        if fd.name == "email":
            return st.just("someone@example.com")
        if fd.name == "clerk_id":
            return st.one_of(st.uuids().map(str), st.just(Ref("clerk")))
        if fd.name == "etag":
            return st.sampled_from(["", "1", "2", "4"])
        if fd.name in ("type", "types"):
            return st.sampled_from(EVENT_TYPES)
        if fd.name == "paths":
            return st.sampled_from([*ALL_FIELD_NAMES, "*"])
        return PLAIN
    if fd.type == FieldDescriptor.TYPE_ENUM:
        return st.sampled_from([v.number for v in fd.enum_type.values if v.number != 0])
    if fd.type == FieldDescriptor.TYPE_BOOL:
        # A follow stream waits out the deadline: plausible requests do not.
        return st.just(False) if fd.name == "follow" else st.booleans()
    if fd.type in INT_TYPES:
        if fd.name == "seconds":
            return st.integers(0, 2_000_000_000)
        if fd.name == "nanos":
            return st.integers(0, 999_999_999)
        return st.integers(0, 5)
    if fd.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return st.floats(-1e6, 1e6)
    return st.just(b"x")


# Edge values a field's name calls for, tried as often as the general ones.
# Each list starts with its sharpest value: Hypothesis tries index 0 first.
ETAG_EDGES = ["2147483648", "0", "-1", "2147483647", "4294967296", "9" * 10, "9" * 18, "9" * 19, " 1", "1.0", "\u0661"]
TOKEN_EDGES = [*(Ref(name) for name in LISTS), "x", "a.b", "a.b.c", "eyJmIjoiIn0.AAAA", "\u00e9.\u00e9", "." * 3, "=" * 40]
ID_EDGES = [*(Ref(role) for role in ID_ROLES), "c" + "z" * 24, "c" + "Z" * 24, "c" * 26, "x" * 32, "x" * 33]


def named_edges(message: Descriptor, fd: FieldDescriptor) -> list[Any]:
    if fd.name == "etag":
        return ETAG_EDGES
    if fd.name == "page_token":
        return TOKEN_EDGES
    if string_role(message, fd.name) is not None:
        return ID_EDGES
    return []


def edge_scalar(message: Descriptor, fd: FieldDescriptor, *, small: bool = False) -> st.SearchStrategy[Any]:
    """Mostly a value from a short list of known edges (so that a few dozen
    examples meet each), sometimes any value of the type."""
    if fd.type == FieldDescriptor.TYPE_STRING:
        strings = SMALL_EDGE_STRINGS if small else SMALL_EDGE_STRINGS + BIG_EDGE_STRINGS
        pool = [*named_edges(message, fd), *strings, *(Ref(role) for role in [*ID_ROLES, *LISTS])]
        named = named_edges(message, fd)
        edges = st.one_of(st.sampled_from(named), st.sampled_from(named), st.sampled_from(pool)) if named else st.sampled_from(pool)
        return st.one_of(edges, edges, edges, TEXT)
    if fd.type == FieldDescriptor.TYPE_ENUM:
        top = max(v.number for v in fd.enum_type.values)
        return st.sampled_from([0, -1, top + 1, 99, *INT32])
    if fd.type in INT_TYPES:
        low, high = INT_TYPES[fd.type]
        edges = st.sampled_from([v for v in INT_EDGES if low <= v <= high])
        return st.one_of(edges, edges, edges, st.integers(low, high))
    if fd.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return st.sampled_from(FINITE_AND_NOT)
    return plausible_scalar(message, fd)


# A request is drawn as a spec: {field name: value | nested spec | [values]},
# turned into a message (with Refs resolved) only when it is sent.


def plausible_value(message: Descriptor, fd: FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
    if fd.message_type is not None:
        if fd.message_type.full_name == "google.protobuf.Struct":
            return STRUCT_PLAIN.map(lambda d: ("struct", d))
        if fd.message_type.full_name == "google.protobuf.FieldMask":
            # Fields of the resource the request updates that its contract
            # (google.api.field_behavior) lets a client change.
            resource = next(f.message_type for f in message.fields if f.message_type is not None and f is not fd)
            frozen = {field_behavior_pb2.OUTPUT_ONLY, field_behavior_pb2.IMMUTABLE}
            names = [f.name for f in resource.fields if f.name != "etag" and not frozen & behaviors(f)]
            return st.lists(st.sampled_from(names), min_size=1, max_size=2).map(lambda paths: {"paths": paths})
        return spec_of(fd.message_type, depth + 1, target=None, random=False)
    return plausible_scalar(message, fd)


def edge_value(message: Descriptor, fd: FieldDescriptor, depth: int, *, small: bool) -> st.SearchStrategy[Any]:
    """`small`: no value of more than a few KiB (for an element repeated 700 times)."""
    if fd.message_type is not None:
        if fd.message_type.full_name == "google.protobuf.Struct":
            return (STRUCT_SMALL_EDGE if small else STRUCT_EDGE).map(lambda d: ("struct", d))
        return spec_of(fd.message_type, depth + 1, target=None, random=True, small=small)
    return edge_scalar(message, fd, small=small)


def field_value(message: Descriptor, fd: FieldDescriptor, depth: int, *, edge: bool, small: bool) -> st.SearchStrategy[Any]:
    if fd.is_repeated and not (fd.message_type is not None and fd.message_type.GetOptions().map_entry):
        one = edge_value(message, fd, depth, small=small) if edge else plausible_value(message, fd, depth)
        if not edge:
            return st.lists(one, min_size=1 if required(fd) else 0, max_size=3)
        # Hundreds of one bad element: error details must stay small.
        many = edge_value(message, fd, depth, small=True).map(lambda v: [v] * 700)
        return st.one_of(st.lists(one, max_size=4), many)
    return edge_value(message, fd, depth, small=small) if edge else plausible_value(message, fd, depth)


# Message types whose fields a mutation targets one by one.
DEEP = ("buildplatform.", "google.protobuf.Timestamp")


def behaviors(fd: FieldDescriptor) -> set[int]:
    """The google.api.field_behavior annotations of a field."""
    return set(fd.GetOptions().Extensions[field_behavior_pb2.field_behavior])


def required(fd: FieldDescriptor) -> bool:
    return field_behavior_pb2.REQUIRED in behaviors(fd)


def leaf_paths(message: Descriptor, depth: int = 0) -> list[tuple[str, ...]]:
    paths: list[tuple[str, ...]] = []
    for fd in message.fields:
        paths.append((fd.name,))
        if fd.message_type is not None and depth < 1 and not fd.is_repeated and fd.message_type.full_name.startswith(DEEP):
            paths.extend((fd.name, *rest) for rest in leaf_paths(fd.message_type, depth + 1))
    return paths


def spec_of(
    message: Descriptor, depth: int, *, target: tuple[str, ...] | None, random: bool, small: bool = False
) -> st.SearchStrategy[dict[str, Any]]:
    @st.composite
    def draw_spec(draw: Callable[[st.SearchStrategy[Any]], Any]) -> dict[str, Any]:
        spec: dict[str, Any] = {}
        for fd in message.fields:
            if target is not None and target[0] == fd.name:
                if len(target) == 1:
                    spec[fd.name] = draw(field_value(message, fd, depth, edge=True, small=small))
                else:
                    spec[fd.name] = draw(spec_of(fd.message_type, depth + 1, target=target[1:], random=False))
                continue
            if depth > 2 or (random and draw(st.booleans())):
                continue  # absent
            edge = random and draw(st.booleans())
            spec[fd.name] = draw(field_value(message, fd, depth, edge=edge, small=small))
        return spec

    return draw_spec()


def build(message: Message, spec: dict[str, Any], world: World) -> Message:
    for name, value in spec.items():
        fd = message.DESCRIPTOR.fields_by_name[name]
        if fd.is_repeated:
            target = getattr(message, name)
            for item in value:
                if fd.message_type is not None:
                    build(target.add(), item, world)
                else:
                    target.append(_scalar(item, world))
        elif isinstance(value, tuple) and value[0] == "struct":
            getattr(message, name).update(value[1])
        elif isinstance(value, dict):
            sub = getattr(message, name)
            sub.SetInParent()
            build(sub, value, world)
        else:
            setattr(message, name, _scalar(value, world))
    return message


def _scalar(value: Any, world: World) -> Any:
    return world.resolve(value) if isinstance(value, Ref) else value


# --- the test -------------------------------------------------------------------


@dataclass
class Target:
    channel: grpc.Channel
    api: Any
    db: psycopg.Connection[Any]
    world: World


@pytest.fixture(scope="module")
def target(postgres: str) -> Iterator[Target]:
    url = create_database(postgres, prefix="bp_fuzz")
    migrate.upgrade(url)
    try:
        with running_server(url) as server, server.channel() as channel, psycopg.connect(url, autocommit=True) as db:
            grpc.channel_ready_future(channel).result(timeout=10)
            yield Target(channel, stubs(channel), db, World())
    finally:
        drop_database(postgres, url)


def shown(request: Message) -> str:
    text = str(request)
    return text if len(text) < 3000 else f"{text[:3000]}... ({len(text)} characters)"


REFUSED_CODES = (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.RESOURCE_EXHAUSTED)


def call(target: Target, method: MethodDescriptor, request: Message) -> grpc.StatusCode:
    path = f"/{method.containing_service.full_name}/{method.name}"
    data = request.SerializeToString()
    try:
        if method.server_streaming:
            for _ in target.channel.unary_stream(path)(data, timeout=STREAM_DEADLINE):
                pass
        else:
            target.channel.unary_unary(path)(data, timeout=UNARY_DEADLINE)
    except grpc.RpcError as error:
        got = read(error)  # also: no traceback in the message
        # RESOURCE_EXHAUSTED here is the client refusing what the server sent:
        # status details beyond its metadata limit, or a response beyond 4 MiB.
        assert got.code not in REFUSED_CODES, (method.full_name, got.code, got.message, shown(request))
        return got.code
    return grpc.StatusCode.OK


def holds(target: Target, method: MethodDescriptor, specs: st.SearchStrategy[dict[str, Any]], examples: int) -> None:
    """Send `examples` requests drawn from `specs`: none is INTERNAL, UNKNOWN
    or RESOURCE_EXHAUSTED, and none that is refused moves the fingerprint."""
    message_class = message_factory.GetMessageClass(method.input_type)

    @settings(
        max_examples=examples,
        derandomize=True,
        # No shrinking: each step is a call to the server, and a request of
        # MiBs shrinks for minutes. derandomize makes a failure repeat as is.
        phases=(Phase.explicit, Phase.generate),
        database=None,
        deadline=None,
        print_blob=False,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
    )
    @given(spec=specs)
    def check(spec: dict[str, Any]) -> None:
        if not world_is_intact(target.db, target.world):
            seed(target.api, target.world)
        request = build(message_class(), spec, target.world)
        before = fingerprint(target.db)
        code = call(target, method, request)
        if code != grpc.StatusCode.OK:
            assert fingerprint(target.db) == before, (method.full_name, code, shown(request))

    check()


MUTATIONS = [(method, path) for method in METHODS for path in leaf_paths(method.input_type)]


@pytest.mark.parametrize(("method", "path"), MUTATIONS, ids=[f"{m.name}-{'.'.join(p)}" for m, p in MUTATIONS])
def test_a_plausible_request_with_one_bad_field_is_never_internal_and_writes_nothing_when_refused(target, method, path):
    holds(target, method, spec_of(method.input_type, 0, target=path, random=False), MUTATED_EXAMPLES)


@pytest.mark.parametrize("method", METHODS, ids=[m.name for m in METHODS])
def test_a_random_request_is_never_internal_and_writes_nothing_when_refused(target, method):
    holds(target, method, spec_of(method.input_type, 0, target=None, random=True), RANDOM_EXAMPLES)
