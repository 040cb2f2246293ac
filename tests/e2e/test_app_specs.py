"""AppSpecService: numbered, immutable versions of a project's specification."""

from __future__ import annotations

import grpc
from buildplatform.v1 import app_spec_pb2 as pb
from buildplatform.v1 import build_pb2, chat_session_pb2, project_pb2

from tests.e2e.expect import code_of, failure, invalid, race
from tests.support import mask


def create(api, project_id: str, content: str = "# spec", **fields) -> pb.AppSpec:
    return api.specs.CreateAppSpec(pb.CreateAppSpecRequest(app_spec=pb.AppSpec(project_id=project_id, content=content, **fields))).app_spec



def test_versions_of_a_project_are_numbered_1_2_3(api, project):
    specs = [create(api, project.id, f"# v{i}") for i in range(3)]
    assert [s.version for s in specs] == [1, 2, 3]
    assert [s.content for s in specs] == ["# v0", "# v1", "# v2"]


def test_versions_are_numbered_per_project(api, user, project):
    create(api, project.id)
    other = api.projects.CreateProject(
        project_pb2.CreateProjectRequest(project=project_pb2.Project(user_id=user.id, name="Other"))
    ).project
    assert create(api, other.id).version == 1


def test_concurrent_creates_get_distinct_versions(api, project):
    versions = [spec.version for _, spec in race(8, lambda index: create(api, project.id, f"# {index}"))]
    assert sorted(versions) == list(range(1, 9))


def test_list_app_specs_lists_newest_version_first(api, project):
    for i in range(3):
        create(api, project.id, f"# v{i}")
    listed = api.specs.ListAppSpecs(pb.ListAppSpecsRequest(project_id=project.id)).app_specs
    assert [s.version for s in listed] == [3, 2, 1]


def test_list_app_specs_pages_across_new_versions(api, project):
    for i in range(4):
        create(api, project.id, f"# v{i}")
    seen: list[int] = []
    token = ""
    while True:
        page = api.specs.ListAppSpecs(pb.ListAppSpecsRequest(project_id=project.id, page_size=3, page_token=token))
        seen += [s.version for s in page.app_specs]
        create(api, project.id, "# newer")
        token = page.next_page_token
        if not token:
            break
    assert seen == [4, 3, 2, 1]


def test_get_app_spec_returns_it(api, project):
    spec = create(api, project.id, summary="first")
    assert api.specs.GetAppSpec(pb.GetAppSpecRequest(id=spec.id)).app_spec == spec


def test_create_app_spec_records_the_chat_session(api, user, project):
    session = api.chats.CreateChatSession(
        chat_session_pb2.CreateChatSessionRequest(chat_session=chat_session_pb2.ChatSession(user_id=user.id))
    ).chat_session
    spec = create(api, project.id, chat_session_id=session.id)
    assert spec.chat_session_id == session.id


def test_create_app_spec_of_unknown_project_is_not_found(api):
    got = failure(api.specs.CreateAppSpec, pb.CreateAppSpecRequest(app_spec=pb.AppSpec(project_id="c" + "c" * 24, content="x")))
    assert got.code == grpc.StatusCode.NOT_FOUND


def test_create_app_spec_of_unknown_chat_session_is_not_found_and_uses_no_version(api, project):
    got = failure(
        api.specs.CreateAppSpec,
        pb.CreateAppSpecRequest(app_spec=pb.AppSpec(project_id=project.id, content="x", chat_session_id="c" + "d" * 24)),
    )
    assert got.code == grpc.StatusCode.NOT_FOUND
    assert create(api, project.id).version == 1


def test_create_app_spec_without_content_is_invalid_argument(api, project):
    invalid(api.specs.CreateAppSpec, pb.CreateAppSpecRequest(app_spec=pb.AppSpec(project_id=project.id)), "app_spec.content")


def test_create_app_spec_over_one_mib_is_invalid_argument(api, project):
    invalid(
        api.specs.CreateAppSpec,
        pb.CreateAppSpecRequest(app_spec=pb.AppSpec(project_id=project.id, content="é" * (1 << 19) + "x")),
        "app_spec.content",
    )


def test_update_app_spec_changes_the_summary(api, project):
    spec = create(api, project.id, summary="old")
    updated = api.specs.UpdateAppSpec(
        pb.UpdateAppSpecRequest(app_spec=pb.AppSpec(id=spec.id, summary="new", content="not this"), update_mask=mask("summary"))
    ).app_spec
    assert (updated.summary, updated.content, updated.version) == ("new", spec.content, spec.version)


def test_update_app_spec_content_is_invalid_argument_and_content_is_unchanged(api, project):
    spec = create(api, project.id, "# original")
    invalid(
        api.specs.UpdateAppSpec,
        pb.UpdateAppSpecRequest(app_spec=pb.AppSpec(id=spec.id, content="# edited"), update_mask=mask("content")),
        "update_mask.paths[0]",
    )
    assert api.specs.GetAppSpec(pb.GetAppSpecRequest(id=spec.id)).app_spec == spec


def test_update_app_spec_star_mask_means_summary_only(api, project):
    spec = create(api, project.id, "# original")
    updated = api.specs.UpdateAppSpec(
        pb.UpdateAppSpecRequest(app_spec=pb.AppSpec(id=spec.id, content="# edited", summary="s"), update_mask=mask("*"))
    ).app_spec
    assert (updated.content, updated.summary) == ("# original", "s")


def test_update_app_spec_with_stale_etag_is_aborted(api, project):
    spec = create(api, project.id)
    api.specs.UpdateAppSpec(pb.UpdateAppSpecRequest(app_spec=pb.AppSpec(id=spec.id, summary="a"), update_mask=mask("summary")))
    got = failure(
        api.specs.UpdateAppSpec,
        pb.UpdateAppSpecRequest(app_spec=pb.AppSpec(id=spec.id, summary="b", etag=spec.etag), update_mask=mask("summary")),
    )
    assert got.code == grpc.StatusCode.ABORTED


def test_delete_app_spec_keeps_builds_with_their_copy_of_the_text(api, user, project):
    spec = create(api, project.id, "# the text")
    build = api.builds.CreateBuild(
        build_pb2.CreateBuildRequest(build=build_pb2.Build(user_id=user.id, project_id=project.id, app_spec_id=spec.id))
    ).build
    assert (build.app_spec, build.app_spec_id) == ("# the text", spec.id)
    api.specs.DeleteAppSpec(pb.DeleteAppSpecRequest(id=spec.id))
    assert code_of(api.specs.GetAppSpec, pb.GetAppSpecRequest(id=spec.id)) == grpc.StatusCode.NOT_FOUND
    kept = api.builds.GetBuild(build_pb2.GetBuildRequest(id=build.id)).build
    assert kept.app_spec == "# the text"
    assert not kept.HasField("app_spec_id")


def test_delete_of_unknown_app_spec_is_not_found(api):
    assert code_of(api.specs.DeleteAppSpec, pb.DeleteAppSpecRequest(id="c" + "e" * 24)) == grpc.StatusCode.NOT_FOUND


def test_a_new_version_after_deleting_the_latest_gets_the_next_number(api, project):
    create(api, project.id)
    second = create(api, project.id)
    api.specs.DeleteAppSpec(pb.DeleteAppSpecRequest(id=second.id))
    assert create(api, project.id).version == 3
