"""Helpers for the streaming tests: build setup, appends, stream readers."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import grpc
from buildplatform.v1 import build_log_pb2 as L
from buildplatform.v1 import build_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from tests.e2e.expect import read

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


@dataclass
class Appender:
    """Appends `batches` batches of `lines` lines to one build, each with its
    first_sequence; a failed batch is retried as it was, after the advised
    pause (UNAVAILABLE only: any other failure stops the appender)."""

    api: object
    build_id: str
    batches: int
    lines: int
    acknowledged: list[tuple[int, str]] = field(default_factory=list)   # (sequence, message)
    failures: list[tuple[grpc.StatusCode, float | None]] = field(default_factory=list)  # code, retry advice
    retried_written: int = 0   # retries the server found already written

    def expected(self) -> list[tuple[int, str]]:
        """Every line, as the build's log must hold it in the end."""
        return [(seq, f"{self.build_id} line {seq}") for seq in range(1, self.batches * self.lines + 1)]

    def run(self) -> None:
        for batch in range(self.batches):
            first = batch * self.lines + 1
            messages = [f"{self.build_id} line {first + i}" for i in range(self.lines)]
            request = L.AppendBuildLogsRequest(
                build_id=self.build_id, first_sequence=first,
                entries=[L.LogEntry(level=L.LOG_LEVEL_INFO, message=m) for m in messages],
            )
            for _attempt in range(200):
                try:
                    response = self.api.logs.AppendBuildLogs(request, timeout=10)   # type: ignore[attr-defined]
                except grpc.RpcError as error:
                    failed = read(error)
                    self.failures.append((failed.code, failed.retry_delay))
                    if failed.code != grpc.StatusCode.UNAVAILABLE:
                        return
                    time.sleep(min(failed.retry_delay or 0.5, 1.0))
                    continue
                assert response.first_sequence == first
                self.retried_written += response.already_written
                self.acknowledged.extend((first + i, m) for i, m in enumerate(messages))
                break
            else:
                return
            time.sleep(0.02)


@dataclass
class Follower:
    """Follows one build's log from the start; when the stream ends with an
    error it resumes with after_sequence = its cursor."""

    api: object
    build_id: str
    seen: list[tuple[int, str]] = field(default_factory=list)
    ended: list[grpc.StatusCode] = field(default_factory=list)
    # at each end: the follower's cursor, the after_sequence the error gave
    # (ErrorInfo metadata), its retry advice
    cursors: list[tuple[int, str | None, float | None]] = field(default_factory=list)
    cursor: int = 0

    def run(self) -> None:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            request = L.StreamBuildLogsRequest(build_id=self.build_id, after_sequence=self.cursor, follow=True)
            try:
                for response in self.api.logs.StreamBuildLogs(request, timeout=120):   # type: ignore[attr-defined]
                    self.seen.extend((log.sequence, log.message) for log in response.logs)
                    self.cursor = response.cursor
                return   # the build finished and every line was delivered
            except grpc.RpcError as error:
                failed = read(error)
                self.ended.append(failed.code)
                self.cursors.append((self.cursor, failed.metadata.get("after_sequence"), failed.retry_delay))
                time.sleep(0.3)
