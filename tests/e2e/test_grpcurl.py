"""The API as grpcurl sees it: everything discoverable through reflection,
callable with JSON, and errors readable with their details."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from buildplatform.v1 import user_pb2

GRPCURL = Path(sys.executable).parent / "grpcurl"
SERVICES = [
    "buildplatform.v1.AppSpecService",
    "buildplatform.v1.BuildEventService",
    "buildplatform.v1.BuildLogService",
    "buildplatform.v1.BuildService",
    "buildplatform.v1.ChatSessionService",
    "buildplatform.v1.ProjectService",
    "buildplatform.v1.UserService",
    "grpc.health.v1.Health",
]


def grpcurl(server, *args: str, data: dict | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    """grpcurl -plaintext -H "authorization: Bearer <the server's admin token>"
    [-d JSON] [flags...] ADDRESS [verb or method...]."""
    flags = [a for a in args if a.startswith("-")]
    rest = [a for a in args if not a.startswith("-")]
    command = [str(GRPCURL), "-plaintext", "-H", f"authorization: Bearer {server.token}", *flags]
    if data is not None:
        command += ["-d", json.dumps(data)]
    result = subprocess.run([*command, server.address, *rest], capture_output=True, text=True, timeout=30)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def test_grpcurl_lists_every_service(server):
    listed = grpcurl(server, "list").stdout.split()
    assert set(SERVICES) <= set(listed)


def test_grpcurl_lists_the_methods_of_a_service(server):
    methods = grpcurl(server, "list", "buildplatform.v1.BuildService").stdout.split()
    for name in ["CreateBuild", "GetBuild", "ListBuilds", "UpdateBuild", "DeleteBuild", "TransitionBuild", "CancelBuild", "ReviewBuild", "WatchBuild"]:
        assert f"buildplatform.v1.BuildService.{name}" in methods


@pytest.mark.parametrize("service", SERVICES)
def test_grpcurl_describes_every_service(server, service):
    assert f"service {service.rsplit('.', 1)[1]} {{" in grpcurl(server, "describe", service).stdout


def test_grpcurl_describes_a_method(server):
    out = grpcurl(server, "describe", "buildplatform.v1.BuildService.TransitionBuild").stdout
    assert "rpc TransitionBuild ( .buildplatform.v1.TransitionBuildRequest ) returns ( .buildplatform.v1.TransitionBuildResponse )" in out


def test_grpcurl_describes_messages_and_enums(server):
    build = grpcurl(server, "describe", "buildplatform.v1.Build").stdout
    assert ".buildplatform.v1.BuildStatus status = 4" in build
    assert "repeated .buildplatform.v1.BuildReview reviews = 16" in build
    status = grpcurl(server, "describe", "buildplatform.v1.BuildStatus").stdout
    assert "BUILD_STATUS_AWAITING_DESIGN_REVIEW = 5;" in status


def test_grpcurl_creates_and_reads_a_user_with_json(server):
    clerk = f"clerk_{uuid.uuid4().hex[:12]}"
    created = json.loads(
        grpcurl(server, "buildplatform.v1.UserService/CreateUser", data={"user": {"clerkId": clerk, "email": "g@example.com"}}).stdout
    )["user"]
    assert created["clerk_id"] == clerk and len(created["id"]) == 25
    got = json.loads(grpcurl(server, "buildplatform.v1.UserService/GetUser", data={"id": created["id"]}).stdout)["user"]
    assert got == created


def test_grpcurl_drives_a_build_with_enum_names(server, api, build):
    moved = json.loads(
        grpcurl(server, "buildplatform.v1.BuildService/TransitionBuild", data={"id": build.id, "status": "BUILD_STATUS_INITIALIZING"}).stdout
    )["build"]
    assert moved["status"] == "BUILD_STATUS_INITIALIZING"
    listed = json.loads(
        grpcurl(
            server, "buildplatform.v1.BuildService/ListBuilds", data={"projectId": build.project_id, "statuses": ["BUILD_STATUS_INITIALIZING"]}
        ).stdout
    )
    assert [b["id"] for b in listed["builds"]] == [build.id]


def test_grpcurl_checks_health(server):
    out = json.loads(grpcurl(server, "grpc.health.v1.Health/Check", data={"service": "buildplatform.v1.UserService"}).stdout)
    assert out == {"status": "SERVING"}


def test_grpcurl_shows_the_code_and_the_bad_field_of_an_error(server):
    result = grpcurl(server, "buildplatform.v1.UserService/GetUser", data={"id": "not-a-cuid"}, check=False)
    assert result.returncode != 0
    assert "Code: InvalidArgument" in result.stderr
    assert '"field":"id"' in result.stderr.replace(" ", "")
    assert "Traceback" not in result.stderr


def test_grpcurl_formats_an_error_as_json_with_its_details(server):
    result = grpcurl(server, "-format-error", "buildplatform.v1.UserService/GetUser", data={"id": "c" + "0" * 24}, check=False)
    assert result.returncode != 0
    status = json.loads(result.stdout or result.stderr)
    assert status["code"] == 5  # NOT_FOUND
    assert status["details"][0]["@type"] == "type.googleapis.com/google.rpc.ResourceInfo"


def test_grpcurl_refused_transition_names_both_statuses(server, build):
    result = grpcurl(
        server, "buildplatform.v1.BuildService/TransitionBuild", data={"id": build.id, "status": "BUILD_STATUS_COMPLETED"}, check=False
    )
    assert "Code: FailedPrecondition" in result.stderr
    assert "PENDING" in result.stderr and "COMPLETED" in result.stderr


def test_grpcurl_sees_what_the_stubs_wrote(server, api, user):
    got = json.loads(grpcurl(server, "buildplatform.v1.UserService/GetUserByClerkId", data={"clerkId": user.clerk_id}).stdout)["user"]
    assert got["id"] == api.users.GetUser(user_pb2.GetUserRequest(id=user.id)).user.id
