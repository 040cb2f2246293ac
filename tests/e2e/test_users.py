"""UserService, as its manual: create, read, list, update, delete."""

from __future__ import annotations

import uuid

import grpc
from buildplatform.v1 import user_pb2

from tests.e2e.expect import code_of, failure, invalid, race
from tests.support import mask


def new_user(api, *, email: str | None = None, name: str | None = "Ada") -> user_pb2.User:
    clerk = f"clerk_{uuid.uuid4().hex[:12]}"
    user = user_pb2.User(clerk_id=clerk, email=email or f"{clerk}@example.com")
    if name is not None:
        user.name = name
    return api.users.CreateUser(user_pb2.CreateUserRequest(user=user)).user



# --- CreateUser ----------------------------------------------------------------


def test_create_user_assigns_id_times_and_etag(api):
    user = new_user(api)
    assert len(user.id) == 25 and user.id.startswith("c")
    assert user.create_time.seconds > 0 and user.update_time == user.create_time
    assert user.etag
    assert user.name == "Ada"


def test_create_user_ignores_output_only_fields(api):
    clerk = f"clerk_{uuid.uuid4().hex[:12]}"
    user = api.users.CreateUser(
        user_pb2.CreateUserRequest(
            user=user_pb2.User(id="cxxxxxxxxxxxxxxxxxxxxxxxx", clerk_id=clerk, email="a@example.com", etag="77")
        )
    ).user
    assert user.id != "cxxxxxxxxxxxxxxxxxxxxxxxx"
    assert user.etag != "77"


def test_create_user_without_name_leaves_name_unset(api):
    user = new_user(api, name=None)
    assert not user.HasField("name")


def test_create_user_with_taken_clerk_id_is_already_exists(api, user):
    got = failure(
        api.users.CreateUser,
        user_pb2.CreateUserRequest(user=user_pb2.User(clerk_id=user.clerk_id, email="other@example.com")),
    )
    assert got.code == grpc.StatusCode.ALREADY_EXISTS
    assert user.clerk_id in got.message


def test_create_user_without_user_is_invalid_argument(api):
    invalid(api.users.CreateUser, user_pb2.CreateUserRequest(), "user")


def test_create_user_without_clerk_id_is_invalid_argument(api):
    invalid(
        api.users.CreateUser,
        user_pb2.CreateUserRequest(user=user_pb2.User(email="a@example.com")),
        "user.clerk_id",
    )


def test_create_user_with_malformed_email_is_invalid_argument(api):
    invalid(
        api.users.CreateUser,
        user_pb2.CreateUserRequest(user=user_pb2.User(clerk_id=f"c_{uuid.uuid4().hex}", email="not-an-email")),
        "user.email",
    )


def test_create_user_reports_every_bad_field_at_once(api):
    got = invalid(
        api.users.CreateUser,
        user_pb2.CreateUserRequest(user=user_pb2.User(clerk_id="", email="", name="x" * 201)),
        "user.clerk_id",
    )
    assert {"user.clerk_id", "user.email", "user.name"} <= set(got.violations)


# --- GetUser / GetUserByClerkId ------------------------------------------------


def test_get_user_returns_the_created_user(api, user):
    assert api.users.GetUser(user_pb2.GetUserRequest(id=user.id)).user == user


def test_get_user_of_unknown_id_is_not_found(api):
    got = failure(api.users.GetUser, user_pb2.GetUserRequest(id="c" + "0" * 24))
    assert got.code == grpc.StatusCode.NOT_FOUND
    assert got.resource_type == "user"


def test_get_user_with_malformed_id_is_invalid_argument(api):
    invalid(api.users.GetUser, user_pb2.GetUserRequest(id="not-a-cuid"), "id")
    invalid(api.users.GetUser, user_pb2.GetUserRequest(id=""), "id")


def test_get_user_by_clerk_id_finds_the_user(api, user):
    got = api.users.GetUserByClerkId(user_pb2.GetUserByClerkIdRequest(clerk_id=user.clerk_id)).user
    assert got == user


def test_get_user_by_unknown_clerk_id_is_not_found(api):
    assert (
        code_of(api.users.GetUserByClerkId, user_pb2.GetUserByClerkIdRequest(clerk_id="nobody_" + uuid.uuid4().hex))
        == grpc.StatusCode.NOT_FOUND
    )


def test_get_user_by_empty_clerk_id_is_invalid_argument(api):
    invalid(api.users.GetUserByClerkId, user_pb2.GetUserByClerkIdRequest(clerk_id=""), "clerk_id")


# --- ListUsers -----------------------------------------------------------------


def test_list_users_filters_by_email_newest_first(api):
    email = f"shared_{uuid.uuid4().hex[:8]}@example.com"
    created = [new_user(api, email=email) for _ in range(3)]
    new_user(api)  # another email
    listed = api.users.ListUsers(user_pb2.ListUsersRequest(email=email)).users
    assert [u.id for u in listed] == [u.id for u in reversed(created)]


def test_list_users_pages_through_every_user_once(api):
    email = f"paged_{uuid.uuid4().hex[:8]}@example.com"
    created = {new_user(api, email=email).id for _ in range(5)}
    seen: list[str] = []
    token = ""
    while True:
        page = api.users.ListUsers(user_pb2.ListUsersRequest(email=email, page_size=2, page_token=token))
        assert len(page.users) <= 2
        seen += [u.id for u in page.users]
        token = page.next_page_token
        if not token:
            break
    assert sorted(seen) == sorted(created) and len(seen) == 5


def test_list_users_pages_stay_correct_while_users_are_created(api):
    email = f"moving_{uuid.uuid4().hex[:8]}@example.com"
    before = [new_user(api, email=email).id for _ in range(5)]
    seen: list[str] = []
    token = ""
    while True:
        page = api.users.ListUsers(user_pb2.ListUsersRequest(email=email, page_size=2, page_token=token))
        seen += [u.id for u in page.users]
        new_user(api, email=email)  # inserted between page calls
        token = page.next_page_token
        if not token:
            break
    assert seen == list(reversed(before))


def test_list_users_with_out_of_range_page_size_is_invalid_argument(api):
    invalid(api.users.ListUsers, user_pb2.ListUsersRequest(page_size=-1), "page_size")
    invalid(api.users.ListUsers, user_pb2.ListUsersRequest(page_size=1001), "page_size")


def test_list_users_with_a_token_of_other_filters_is_invalid_argument(api):
    email = f"tok_{uuid.uuid4().hex[:8]}@example.com"
    for _ in range(2):
        new_user(api, email=email)
    token = api.users.ListUsers(user_pb2.ListUsersRequest(email=email, page_size=1)).next_page_token
    assert token
    invalid(api.users.ListUsers, user_pb2.ListUsersRequest(email="other@example.com", page_token=token), "page_token")


# --- UpdateUser ----------------------------------------------------------------


def test_update_user_changes_only_masked_fields(api, user):
    updated = api.users.UpdateUser(
        user_pb2.UpdateUserRequest(
            user=user_pb2.User(id=user.id, email="changed@example.com", name="Grace"), update_mask=mask("name")
        )
    ).user
    assert updated.name == "Grace"
    assert updated.email == user.email
    assert updated.etag != user.etag
    assert api.users.GetUser(user_pb2.GetUserRequest(id=user.id)).user == updated


def test_update_user_with_star_mask_changes_email_and_name(api, user):
    updated = api.users.UpdateUser(
        user_pb2.UpdateUserRequest(
            user=user_pb2.User(id=user.id, email="star@example.com", name="Star"), update_mask=mask("*")
        )
    ).user
    assert (updated.email, updated.name) == ("star@example.com", "Star")


def test_update_user_mask_naming_an_absent_name_clears_it(api, user):
    updated = api.users.UpdateUser(
        user_pb2.UpdateUserRequest(user=user_pb2.User(id=user.id), update_mask=mask("name"))
    ).user
    assert not updated.HasField("name")


def test_update_user_mask_naming_clerk_id_is_invalid_argument(api, user):
    invalid(
        api.users.UpdateUser,
        user_pb2.UpdateUserRequest(user=user_pb2.User(id=user.id, clerk_id="x"), update_mask=mask("name", "clerk_id")),
        "update_mask.paths[1]",
    )
    assert api.users.GetUser(user_pb2.GetUserRequest(id=user.id)).user == user


def test_update_user_mask_naming_an_unknown_field_is_invalid_argument(api, user):
    invalid(
        api.users.UpdateUser,
        user_pb2.UpdateUserRequest(user=user_pb2.User(id=user.id), update_mask=mask("nickname")),
        "update_mask.paths[0]",
    )


def test_update_user_without_mask_is_invalid_argument(api, user):
    invalid(
        api.users.UpdateUser,
        user_pb2.UpdateUserRequest(user=user_pb2.User(id=user.id, name="x")),
        "update_mask",
    )


def test_update_user_with_stale_etag_is_aborted(api, user):
    api.users.UpdateUser(user_pb2.UpdateUserRequest(user=user_pb2.User(id=user.id, name="first"), update_mask=mask("name")))
    got = failure(
        api.users.UpdateUser,
        user_pb2.UpdateUserRequest(user=user_pb2.User(id=user.id, name="second", etag=user.etag), update_mask=mask("name")),
    )
    assert got.code == grpc.StatusCode.ABORTED
    assert got.reason == "ETAG_MISMATCH"
    assert api.users.GetUser(user_pb2.GetUserRequest(id=user.id)).user.name == "first"


def test_update_user_with_current_etag_succeeds(api, user):
    updated = api.users.UpdateUser(
        user_pb2.UpdateUserRequest(user=user_pb2.User(id=user.id, name="ok", etag=user.etag), update_mask=mask("name"))
    ).user
    assert updated.name == "ok"


def test_update_user_with_forged_etag_is_invalid_argument(api, user):
    invalid(
        api.users.UpdateUser,
        user_pb2.UpdateUserRequest(user=user_pb2.User(id=user.id, name="x", etag="W/abc"), update_mask=mask("name")),
        "user.etag",
    )


def test_update_of_unknown_user_is_not_found(api):
    assert (
        code_of(
            api.users.UpdateUser,
            user_pb2.UpdateUserRequest(user=user_pb2.User(id="c" + "1" * 24, name="x"), update_mask=mask("name")),
        )
        == grpc.StatusCode.NOT_FOUND
    )


def test_concurrent_updates_with_one_etag_have_exactly_one_winner(api, user):
    def update(index: int) -> user_pb2.UpdateUserResponse:
        return api.users.UpdateUser(user_pb2.UpdateUserRequest(
            user=user_pb2.User(id=user.id, name=f"writer {index}", etag=user.etag), update_mask=mask("name")
        ))

    outcomes = [
        result.code() if isinstance(result, grpc.RpcError) else grpc.StatusCode.OK
        for _, result in race(8, update)
    ]
    assert outcomes.count(grpc.StatusCode.OK) == 1
    assert outcomes.count(grpc.StatusCode.ABORTED) == 7


# --- DeleteUser ----------------------------------------------------------------


def test_delete_user_then_get_is_not_found(api, user):
    api.users.DeleteUser(user_pb2.DeleteUserRequest(id=user.id))
    assert code_of(api.users.GetUser, user_pb2.GetUserRequest(id=user.id)) == grpc.StatusCode.NOT_FOUND


def test_delete_of_unknown_user_is_not_found(api):
    assert code_of(api.users.DeleteUser, user_pb2.DeleteUserRequest(id="c" + "2" * 24)) == grpc.StatusCode.NOT_FOUND


def test_delete_user_with_stale_etag_is_aborted_and_keeps_the_user(api, user):
    api.users.UpdateUser(user_pb2.UpdateUserRequest(user=user_pb2.User(id=user.id, name="n"), update_mask=mask("name")))
    assert code_of(api.users.DeleteUser, user_pb2.DeleteUserRequest(id=user.id, etag=user.etag)) == grpc.StatusCode.ABORTED
    assert api.users.GetUser(user_pb2.GetUserRequest(id=user.id)).user.id == user.id


def test_delete_user_with_current_etag_deletes_it(api, user):
    api.users.DeleteUser(user_pb2.DeleteUserRequest(id=user.id, etag=user.etag))
    assert code_of(api.users.GetUser, user_pb2.GetUserRequest(id=user.id)) == grpc.StatusCode.NOT_FOUND


def test_clerk_id_of_a_deleted_user_can_be_reused(api, user):
    api.users.DeleteUser(user_pb2.DeleteUserRequest(id=user.id))
    again = api.users.CreateUser(
        user_pb2.CreateUserRequest(user=user_pb2.User(clerk_id=user.clerk_id, email=user.email))
    ).user
    assert again.id != user.id


def test_delete_user_removes_everything_it_owns(api, database_url):
    from buildplatform.v1 import (
        app_spec_pb2,
        build_event_pb2,
        build_log_pb2,
        build_pb2,
        chat_session_pb2,
        project_pb2,
    )

    from tests.e2e.expect import sql_count

    owner = new_user(api)
    bystander = new_user(api)
    project = api.projects.CreateProject(
        project_pb2.CreateProjectRequest(project=project_pb2.Project(user_id=owner.id, name="Owned"))
    ).project
    session = api.chats.CreateChatSession(
        chat_session_pb2.CreateChatSessionRequest(
            chat_session=chat_session_pb2.ChatSession(user_id=owner.id, project_id=project.id, title="t")
        )
    ).chat_session
    api.chats.AddChatMessage(
        chat_session_pb2.AddChatMessageRequest(
            session_id=session.id, message=chat_session_pb2.ChatMessage(role=chat_session_pb2.CHAT_ROLE_USER, content="hi")
        )
    )
    spec = api.specs.CreateAppSpec(
        app_spec_pb2.CreateAppSpecRequest(
            app_spec=app_spec_pb2.AppSpec(project_id=project.id, content="# spec", chat_session_id=session.id)
        )
    ).app_spec
    build = api.builds.CreateBuild(
        build_pb2.CreateBuildRequest(build=build_pb2.Build(user_id=owner.id, project_id=project.id, app_spec_id=spec.id))
    ).build
    api.logs.AppendBuildLogs(
        build_log_pb2.AppendBuildLogsRequest(
            build_id=build.id, entries=[build_log_pb2.LogEntry(level=build_log_pb2.LOG_LEVEL_INFO, message="x")]
        )
    )
    api.events.AppendBuildEvents(
        build_event_pb2.AppendBuildEventsRequest(build_id=build.id, entries=[build_event_pb2.EventEntry(type="step.started")])
    )
    kept = api.projects.CreateProject(
        project_pb2.CreateProjectRequest(project=project_pb2.Project(user_id=bystander.id, name="Kept"))
    ).project

    api.users.DeleteUser(user_pb2.DeleteUserRequest(id=owner.id))

    not_found = grpc.StatusCode.NOT_FOUND
    assert code_of(api.users.GetUser, user_pb2.GetUserRequest(id=owner.id)) == not_found
    assert code_of(api.projects.GetProject, project_pb2.GetProjectRequest(id=project.id)) == not_found
    assert code_of(api.builds.GetBuild, build_pb2.GetBuildRequest(id=build.id)) == not_found
    assert code_of(api.chats.GetChatSession, chat_session_pb2.GetChatSessionRequest(id=session.id)) == not_found
    assert code_of(api.specs.GetAppSpec, app_spec_pb2.GetAppSpecRequest(id=spec.id)) == not_found
    for query, key in [
        ("SELECT count(*) FROM users WHERE id = %s", owner.id),
        ("SELECT count(*) FROM projects WHERE user_id = %s", owner.id),
        ("SELECT count(*) FROM builds WHERE user_id = %s", owner.id),
        ("SELECT count(*) FROM build_logs WHERE build_id = %s", build.id),
        ("SELECT count(*) FROM build_events WHERE build_id = %s", build.id),
        ("SELECT count(*) FROM chat_sessions WHERE user_id = %s", owner.id),
        ("SELECT count(*) FROM chat_messages WHERE session_id = %s", session.id),
        ("SELECT count(*) FROM app_specs WHERE project_id = %s", project.id),
    ]:
        assert sql_count(database_url, query, key) == 0, query
    assert api.projects.GetProject(project_pb2.GetProjectRequest(id=kept.id)).project == kept
