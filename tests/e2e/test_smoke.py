from __future__ import annotations

from buildplatform.v1 import build_pb2, user_pb2
from grpc_health.v1 import health_pb2


def test_health_reports_serving(api):
    response = api.health.Check(health_pb2.HealthCheckRequest(service="buildplatform.v1.BuildService"))
    assert response.status == health_pb2.HealthCheckResponse.SERVING


def test_created_build_is_pending_and_can_be_read_back(api, build):
    assert build.status == build_pb2.BUILD_STATUS_PENDING
    got = api.builds.GetBuild(build_pb2.GetBuildRequest(id=build.id)).build
    assert got == build


def test_user_round_trip(api, user):
    got = api.users.GetUser(user_pb2.GetUserRequest(id=user.id)).user
    assert got.clerk_id == user.clerk_id and got.name == "Test User"
