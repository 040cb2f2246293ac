"""Helpers for the streaming tests: build setup, appends, stream readers."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import grpc
from buildplatform.v1 import build_log_pb2 as L
from buildplatform.v1 import build_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

INFO, WARN, ERROR, TOOL = L.LOG_LEVEL_INFO, L.LOG_LEVEL_WARN, L.LOG_LEVEL_ERROR, L.LOG_LEVEL_TOOL


def lines(*messages: str, level: int = INFO) -> list[L.LogEntry]:
    return [L.LogEntry(level=level, message=m) for m in messages]


def append(api: SimpleNamespace, build_id: str, entries: list[L.LogEntry], first: int = 0) -> L.AppendBuildLogsResponse:
    return api.logs.AppendBuildLogs(L.AppendBuildLogsRequest(build_id=build_id, entries=entries, first_sequence=first))


def move(api: SimpleNamespace, build_id: str, *statuses: int) -> build_pb2.Build:
    build = None
    for status in statuses:
        build = api.builds.TransitionBuild(build_pb2.TransitionBuildRequest(id=build_id, status=status)).build
    assert build is not None
    return build


def start_running(api: SimpleNamespace, build_id: str) -> None:
    move(api, build_id, build_pb2.BUILD_STATUS_INITIALIZING, build_pb2.BUILD_STATUS_RUNNING)


def finish(api: SimpleNamespace, build_id: str, status: int = build_pb2.BUILD_STATUS_COMPLETED) -> None:
    current = api.builds.GetBuild(build_pb2.GetBuildRequest(id=build_id)).build.status
    if current == build_pb2.BUILD_STATUS_PENDING:
        start_running(api, build_id)
    move(api, build_id, status)


def read_stream(api: SimpleNamespace, **request: Any) -> list[L.StreamBuildLogsResponse]:
    return list(api.logs.StreamBuildLogs(L.StreamBuildLogsRequest(**request), timeout=30))


def messages_of(responses: list[Any]) -> list[str]:
    return [log.message for response in responses for log in response.logs]


def violations(error: grpc.RpcError) -> dict[str, str]:
    """field -> description of the BadRequest detail of an INVALID_ARGUMENT."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None, "error carries no google.rpc.Status"
    found: dict[str, str] = {}
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            found.update({v.field: v.description for v in bad.field_violations})
    return found


def error_info(error: grpc.RpcError) -> error_details_pb2.ErrorInfo:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info
    raise AssertionError("no ErrorInfo detail")


def long_lines(tag: str, count: int, level: int = INFO) -> list[L.LogEntry]:
    """Lines at the field maximum: a 65,536-byte message and 16 KiB of
    metadata (as JSON, the limit the server checks), each naming its index."""
    from google.protobuf import struct_pb2

    entries = []
    for index in range(count):
        metadata = struct_pb2.Struct()
        metadata.update({"index": index, "blob": "m" * 16_000})
        head = f"{tag} {index} "
        entries.append(L.LogEntry(level=level, message=head + "x" * (65_536 - len(head)), metadata=metadata))
    return entries


def items_bytes(items: Any) -> int:
    """The bytes a response's repeated items take on the wire: each item's
    serialized size plus its field tag and length prefix."""
    total = 0
    for item in items:
        size = item.ByteSize()
        total += 1 + size + (1 if size < 1 << 7 else 2 if size < 1 << 14 else 3 if size < 1 << 21 else 4)
    return total


def new_build(api: SimpleNamespace) -> build_pb2.Build:
    """A PENDING build of a new user's new project, through `api` (for tests
    that run a server of their own, where the session fixtures do not reach)."""
    import uuid

    from buildplatform.v1 import project_pb2, user_pb2

    clerk = f"user_{uuid.uuid4().hex[:12]}"
    user = api.users.CreateUser(
        user_pb2.CreateUserRequest(user=user_pb2.User(clerk_id=clerk, email=f"{clerk}@example.com"))
    ).user
    project = api.projects.CreateProject(
        project_pb2.CreateProjectRequest(project=project_pb2.Project(user_id=user.id, name="Todo app"))
    ).project
    return api.builds.CreateBuild(
        build_pb2.CreateBuildRequest(build=build_pb2.Build(user_id=user.id, project_id=project.id, app_spec="# app"))
    ).build
