"""Project.log_retention_days: set by whoever may update the project, bounded,
unset meaning the server's LOG_RETENTION_DAYS (docs/lifecycle.md#retention)."""

from __future__ import annotations

import json
import uuid

import grpc
from buildplatform.v1 import project_pb2, user_pb2
from google.protobuf import field_mask_pb2

from tests.e2e.expect import failure, invalid, sql_count
from tests.support import open_channel, stubs


def mask(*paths: str) -> field_mask_pb2.FieldMask:
    return field_mask_pb2.FieldMask(paths=list(paths))


def create(api, user_id: str, **fields) -> project_pb2.Project:  # type: ignore[no-untyped-def]
    return api.projects.CreateProject(
        project_pb2.CreateProjectRequest(project=project_pb2.Project(user_id=user_id, name="Kept", **fields))
    ).project


def test_a_project_created_with_a_retention_keeps_it(api, user):
    project = create(api, user.id, log_retention_days=30)
    assert project.HasField("log_retention_days") and project.log_retention_days == 30
    again = api.projects.GetProject(project_pb2.GetProjectRequest(id=project.id)).project
    assert again.log_retention_days == 30


def test_a_project_without_a_retention_reads_unset_meaning_the_server_default(api, database_url, user):
    """0 on the wire (JSON clients often send it) means unset, as page_size's 0 means the default."""
    for project in (create(api, user.id), create(api, user.id, log_retention_days=0)):
        assert not project.HasField("log_retention_days")
        assert sql_count(database_url, "SELECT count(*) FROM projects WHERE id = %s AND log_retention_days IS NULL",
                         project.id) == 1


def test_update_sets_changes_and_clears_the_retention(api, database_url, user):
    project = create(api, user.id)

    def update(**fields) -> project_pb2.Project:  # type: ignore[no-untyped-def]
        return api.projects.UpdateProject(project_pb2.UpdateProjectRequest(
            project=project_pb2.Project(id=project.id, **fields), update_mask=mask("log_retention_days"))).project

    assert update(log_retention_days=7).log_retention_days == 7
    assert update(log_retention_days=3650).log_retention_days == 3650
    assert sql_count(database_url, "SELECT log_retention_days FROM projects WHERE id = %s", project.id) == 3650
    cleared = update()
    assert not cleared.HasField("log_retention_days")
    assert sql_count(database_url, "SELECT count(*) FROM projects WHERE id = %s AND log_retention_days IS NULL",
                     project.id) == 1
    # A mask without the field leaves it alone; "*" names it too.
    assert update(log_retention_days=14).log_retention_days == 14
    renamed = api.projects.UpdateProject(project_pb2.UpdateProjectRequest(
        project=project_pb2.Project(id=project.id, name="Renamed"), update_mask=mask("name"))).project
    assert (renamed.name, renamed.log_retention_days) == ("Renamed", 14)
    everything = api.projects.UpdateProject(project_pb2.UpdateProjectRequest(
        project=project_pb2.Project(id=project.id, name="All", log_retention_days=1), update_mask=mask("*"))).project
    assert (everything.name, everything.log_retention_days) == ("All", 1)


def test_a_retention_out_of_bounds_is_invalid_argument_naming_the_field_and_writes_nothing(api, database_url, user):
    before = sql_count(database_url, "SELECT count(*) FROM projects WHERE user_id = %s", user.id)
    for days in (-1, 3651, 2**31 - 1):
        got = invalid(api.projects.CreateProject, project_pb2.CreateProjectRequest(
            project=project_pb2.Project(user_id=user.id, name="Too long", log_retention_days=days)),
            "project.log_retention_days")
        assert "between 1 and 3650" in got.violations["project.log_retention_days"]
    assert sql_count(database_url, "SELECT count(*) FROM projects WHERE user_id = %s", user.id) == before

    project = create(api, user.id, log_retention_days=10)
    invalid(api.projects.UpdateProject, project_pb2.UpdateProjectRequest(
        project=project_pb2.Project(id=project.id, log_retention_days=4000), update_mask=mask("log_retention_days")),
        "project.log_retention_days")
    got = api.projects.GetProject(project_pb2.GetProjectRequest(id=project.id)).project
    assert (got.log_retention_days, got.etag) == (10, project.etag)


def test_the_retention_over_http_json(server, user):
    """A plain JSON POST, as curl or grpcurl-style JSON clients send it."""
    http = server.http()

    def post(method: str, body: dict) -> tuple[int, dict]:  # type: ignore[type-arg]
        status, _, data = http.request(
            "POST", f"/buildplatform.v1.ProjectService/{method}", json.dumps(body).encode(),
            {"content-type": "application/json", "authorization": f"Bearer {http.token}"})
        return status, json.loads(data)

    status, created = post("CreateProject", {"project": {"userId": user.id, "name": "Json", "logRetentionDays": 45}})
    assert status == 200 and created["project"]["logRetentionDays"] == 45
    project_id = created["project"]["id"]
    status, updated = post("UpdateProject", {"project": {"id": project_id, "logRetentionDays": 5},
                                             "updateMask": "logRetentionDays"})
    assert status == 200 and updated["project"]["logRetentionDays"] == 5
    status, refused = post("UpdateProject", {"project": {"id": project_id, "logRetentionDays": 0x7fff},
                                             "updateMask": "logRetentionDays"})
    assert status == 400 and refused["code"] == "invalid_argument"
    assert "project.log_retention_days" in refused["message"]
    status, cleared = post("UpdateProject", {"project": {"id": project_id}, "updateMask": "logRetentionDays"})
    assert status == 200 and "logRetentionDays" not in cleared["project"]


def test_only_who_may_update_the_project_sets_its_retention(server, api, session_key):
    def new_user() -> user_pb2.User:
        clerk = f"user_{uuid.uuid4().hex[:12]}"
        return api.users.CreateUser(user_pb2.CreateUserRequest(
            user=user_pb2.User(clerk_id=clerk, email=f"{clerk}@example.com"))).user

    owner, other = new_user(), new_user()
    project = create(api, owner.id, log_retention_days=20)
    request = project_pb2.UpdateProjectRequest(
        project=project_pb2.Project(id=project.id, log_retention_days=1), update_mask=mask("log_retention_days"))
    with open_channel(server.address, token=session_key.sign(other.clerk_id)) as channel:
        refused = failure(stubs(channel).projects.UpdateProject, request)
    assert refused.code in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.PERMISSION_DENIED)
    assert api.projects.GetProject(project_pb2.GetProjectRequest(id=project.id)).project.log_retention_days == 20
    with open_channel(server.address, token=session_key.sign(owner.clerk_id)) as channel:
        mine = stubs(channel).projects.UpdateProject(request).project
    assert mine.log_retention_days == 1


def test_the_retention_through_grpcurl(server, user):
    """grpcurl over the gRPC port (server reflection), JSON in and out."""
    from tests.e2e.test_grpcurl import grpcurl

    created = grpcurl(server, "buildplatform.v1.ProjectService/CreateProject",
                      data={"project": {"user_id": user.id, "name": "Curl", "log_retention_days": 60}})
    project = json.loads(created.stdout)["project"]
    assert project["log_retention_days"] == 60   # grpcurl prints the proto's field names
    refused = grpcurl(server, "buildplatform.v1.ProjectService/UpdateProject", check=False,
                      data={"project": {"id": project["id"], "log_retention_days": -5},
                            "update_mask": {"paths": ["log_retention_days"]}})
    assert refused.returncode != 0
    assert "InvalidArgument" in refused.stderr and "project.log_retention_days" in refused.stderr
    got = grpcurl(server, "buildplatform.v1.ProjectService/GetProject", data={"id": project["id"]})
    assert json.loads(got.stdout)["project"]["log_retention_days"] == 60
