"""ProjectService: a user's projects, the unit builds and app specs belong to."""

from __future__ import annotations

import grpc
from buildplatform.v1 import app_spec_pb2, build_pb2, project_pb2, user_pb2

from tests.e2e.expect import code_of, failure, invalid, sql_count
from tests.support import mask


def create(api, user_id: str, name: str = "Shop", description: str | None = None) -> project_pb2.Project:
    project = project_pb2.Project(user_id=user_id, name=name)
    if description is not None:
        project.description = description
    return api.projects.CreateProject(project_pb2.CreateProjectRequest(project=project)).project



def test_create_project_returns_it_with_server_fields(api, user):
    project = create(api, user.id, "Shop", "Sells things")
    assert (project.user_id, project.name, project.description) == (user.id, "Shop", "Sells things")
    assert project.id and project.etag and project.create_time.seconds > 0


def test_create_project_for_unknown_user_is_not_found(api):
    got = failure(
        api.projects.CreateProject,
        project_pb2.CreateProjectRequest(project=project_pb2.Project(user_id="c" + "8" * 24, name="x")),
    )
    assert got.code == grpc.StatusCode.NOT_FOUND
    assert "c" + "8" * 24 in got.message


def test_create_project_without_name_is_invalid_argument(api, user):
    invalid(
        api.projects.CreateProject,
        project_pb2.CreateProjectRequest(project=project_pb2.Project(user_id=user.id, name=" ")),
        "project.name",
    )


def test_create_project_with_a_201_character_name_is_invalid_argument(api, user):
    invalid(
        api.projects.CreateProject,
        project_pb2.CreateProjectRequest(project=project_pb2.Project(user_id=user.id, name="n" * 201)),
        "project.name",
    )


def test_create_project_with_malformed_user_id_is_invalid_argument(api):
    invalid(
        api.projects.CreateProject,
        project_pb2.CreateProjectRequest(project=project_pb2.Project(user_id="user-1", name="x")),
        "project.user_id",
    )


def test_get_project_returns_it(api, project):
    assert api.projects.GetProject(project_pb2.GetProjectRequest(id=project.id)).project == project


def test_get_unknown_project_is_not_found(api):
    assert code_of(api.projects.GetProject, project_pb2.GetProjectRequest(id="c" + "9" * 24)) == grpc.StatusCode.NOT_FOUND


def test_list_projects_of_a_user_newest_first(api, user):
    created = [create(api, user.id, f"p{i}").id for i in range(3)]
    listed = api.projects.ListProjects(project_pb2.ListProjectsRequest(user_id=user.id)).projects
    assert [p.id for p in listed] == list(reversed(created))


def test_list_projects_pages_stay_correct_while_projects_are_created(api, user):
    before = [create(api, user.id, f"p{i}").id for i in range(5)]
    seen: list[str] = []
    token = ""
    while True:
        page = api.projects.ListProjects(project_pb2.ListProjectsRequest(user_id=user.id, page_size=2, page_token=token))
        assert len(page.projects) <= 2
        seen += [p.id for p in page.projects]
        create(api, user.id, "inserted between pages")
        token = page.next_page_token
        if not token:
            break
    assert seen == list(reversed(before))


def test_list_projects_last_page_has_no_token(api, user):
    create(api, user.id)
    page = api.projects.ListProjects(project_pb2.ListProjectsRequest(user_id=user.id, page_size=1))
    assert len(page.projects) == 1 and page.next_page_token == ""


def test_list_projects_with_a_tampered_token_is_invalid_argument(api, user):
    for _ in range(2):
        create(api, user.id)
    token = api.projects.ListProjects(project_pb2.ListProjectsRequest(user_id=user.id, page_size=1)).next_page_token
    body, tag = token.split(".")
    tampered = body[:-2] + ("A" if body[-2] != "A" else "B") + body[-1] + "." + tag
    invalid(api.projects.ListProjects, project_pb2.ListProjectsRequest(user_id=user.id, page_token=tampered), "page_token")
    invalid(api.projects.ListProjects, project_pb2.ListProjectsRequest(user_id=user.id, page_token="garbage"), "page_token")


def test_list_projects_with_a_token_of_another_user_is_invalid_argument(api, user, project):
    create(api, user.id)
    token = api.projects.ListProjects(project_pb2.ListProjectsRequest(user_id=user.id, page_size=1)).next_page_token
    assert token
    invalid(api.projects.ListProjects, project_pb2.ListProjectsRequest(page_token=token), "page_token")


def test_list_projects_with_malformed_user_filter_is_invalid_argument(api):
    invalid(api.projects.ListProjects, project_pb2.ListProjectsRequest(user_id="bob"), "user_id")


def test_update_project_changes_only_masked_fields(api, user):
    project = create(api, user.id, "Old", "kept")
    updated = api.projects.UpdateProject(
        project_pb2.UpdateProjectRequest(
            project=project_pb2.Project(id=project.id, name="New", description="ignored"), update_mask=mask("name")
        )
    ).project
    assert (updated.name, updated.description) == ("New", "kept")
    assert updated.etag != project.etag
    assert updated.update_time.ToDatetime() >= project.update_time.ToDatetime()
    assert updated.create_time == project.create_time


def test_update_project_mask_naming_user_id_is_invalid_argument(api, project):
    invalid(
        api.projects.UpdateProject,
        project_pb2.UpdateProjectRequest(project=project_pb2.Project(id=project.id, user_id=project.user_id), update_mask=mask("user_id")),
        "update_mask.paths[0]",
    )
    assert api.projects.GetProject(project_pb2.GetProjectRequest(id=project.id)).project == project


def test_update_project_with_empty_name_is_invalid_argument(api, project):
    invalid(
        api.projects.UpdateProject,
        project_pb2.UpdateProjectRequest(project=project_pb2.Project(id=project.id, name=""), update_mask=mask("name")),
        "project.name",
    )


def test_update_project_with_stale_etag_is_aborted(api, project):
    api.projects.UpdateProject(
        project_pb2.UpdateProjectRequest(project=project_pb2.Project(id=project.id, name="a"), update_mask=mask("name"))
    )
    got = failure(
        api.projects.UpdateProject,
        project_pb2.UpdateProjectRequest(project=project_pb2.Project(id=project.id, name="b", etag=project.etag), update_mask=mask("name")),
    )
    assert got.code == grpc.StatusCode.ABORTED
    assert got.metadata["current_etag"] != project.etag


def test_update_of_unknown_project_is_not_found(api):
    got = failure(
        api.projects.UpdateProject,
        project_pb2.UpdateProjectRequest(project=project_pb2.Project(id="c" + "a" * 24, name="x"), update_mask=mask("name")),
    )
    assert got.code == grpc.StatusCode.NOT_FOUND


def test_delete_project_deletes_its_builds_and_app_specs(api, user, project, make_build, database_url):
    spec = api.specs.CreateAppSpec(
        app_spec_pb2.CreateAppSpecRequest(app_spec=app_spec_pb2.AppSpec(project_id=project.id, content="# spec"))
    ).app_spec
    build = make_build()
    api.projects.DeleteProject(project_pb2.DeleteProjectRequest(id=project.id))
    assert code_of(api.projects.GetProject, project_pb2.GetProjectRequest(id=project.id)) == grpc.StatusCode.NOT_FOUND
    assert code_of(api.builds.GetBuild, build_pb2.GetBuildRequest(id=build.id)) == grpc.StatusCode.NOT_FOUND
    assert code_of(api.specs.GetAppSpec, app_spec_pb2.GetAppSpecRequest(id=spec.id)) == grpc.StatusCode.NOT_FOUND
    assert sql_count(database_url, "SELECT count(*) FROM builds WHERE project_id = %s", project.id) == 0
    assert api.users.GetUser(user_pb2.GetUserRequest(id=user.id)).user.id == user.id


def test_delete_project_with_stale_etag_is_aborted(api, project):
    api.projects.UpdateProject(
        project_pb2.UpdateProjectRequest(project=project_pb2.Project(id=project.id, name="a"), update_mask=mask("name"))
    )
    got = failure(api.projects.DeleteProject, project_pb2.DeleteProjectRequest(id=project.id, etag=project.etag))
    assert got.code == grpc.StatusCode.ABORTED
    assert api.projects.GetProject(project_pb2.GetProjectRequest(id=project.id)).project.name == "a"


def test_delete_of_unknown_project_is_not_found(api):
    assert code_of(api.projects.DeleteProject, project_pb2.DeleteProjectRequest(id="c" + "b" * 24)) == grpc.StatusCode.NOT_FOUND
