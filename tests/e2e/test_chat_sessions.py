"""ChatSessionService: sessions of a user (optionally about a project) and
their append-only, numbered conversation."""

from __future__ import annotations

import uuid

import grpc
import pytest
from buildplatform.v1 import chat_session_pb2 as pb
from buildplatform.v1 import project_pb2, user_pb2
from google.protobuf import struct_pb2

from tests.e2e.expect import code_of, failure, invalid, race, sql_count
from tests.support import mask

USER_ROLE = pb.CHAT_ROLE_USER


@pytest.fixture
def session(api, user, project) -> pb.ChatSession:
    return api.chats.CreateChatSession(
        pb.CreateChatSessionRequest(chat_session=pb.ChatSession(user_id=user.id, project_id=project.id, title="Plan"))
    ).chat_session


def other_user(api) -> user_pb2.User:
    clerk = f"clerk_{uuid.uuid4().hex[:12]}"
    return api.users.CreateUser(user_pb2.CreateUserRequest(user=user_pb2.User(clerk_id=clerk, email="o@example.com"))).user


def other_project(api, owner_id: str) -> project_pb2.Project:
    return api.projects.CreateProject(
        project_pb2.CreateProjectRequest(project=project_pb2.Project(user_id=owner_id, name="Other"))
    ).project


def say(api, session_id: str, content: str, role: int = USER_ROLE, **metadata) -> pb.ChatMessage:
    message = pb.ChatMessage(role=role, content=content)
    if metadata:
        message.metadata.update(metadata)
    return api.chats.AddChatMessage(pb.AddChatMessageRequest(session_id=session_id, message=message)).message



# --- sessions ------------------------------------------------------------------


def test_create_chat_session_starts_empty(api, session, user, project):
    assert (session.user_id, session.project_id, session.title) == (user.id, project.id, "Plan")
    assert session.message_count == 0 and session.etag


def test_create_chat_session_without_project_is_allowed(api, user):
    session = api.chats.CreateChatSession(
        pb.CreateChatSessionRequest(chat_session=pb.ChatSession(user_id=user.id))
    ).chat_session
    assert not session.HasField("project_id")


def test_create_chat_session_of_unknown_user_is_not_found(api):
    got = failure(api.chats.CreateChatSession, pb.CreateChatSessionRequest(chat_session=pb.ChatSession(user_id="c" + "3" * 24)))
    assert got.code == grpc.StatusCode.NOT_FOUND


def test_create_chat_session_about_unknown_project_is_not_found(api, user):
    got = failure(
        api.chats.CreateChatSession,
        pb.CreateChatSessionRequest(chat_session=pb.ChatSession(user_id=user.id, project_id="c" + "4" * 24)),
    )
    assert got.code == grpc.StatusCode.NOT_FOUND


def test_create_chat_session_about_another_users_project_is_failed_precondition(api, user):
    foreign = other_project(api, other_user(api).id)
    got = failure(
        api.chats.CreateChatSession,
        pb.CreateChatSessionRequest(chat_session=pb.ChatSession(user_id=user.id, project_id=foreign.id)),
    )
    assert got.code == grpc.StatusCode.FAILED_PRECONDITION
    assert got.reason == "PROJECT_OWNER_MISMATCH"


def test_create_chat_session_with_too_long_title_is_invalid_argument(api, user):
    invalid(
        api.chats.CreateChatSession,
        pb.CreateChatSessionRequest(chat_session=pb.ChatSession(user_id=user.id, title="t" * 501)),
        "chat_session.title",
    )


def test_create_chat_session_with_malformed_project_id_is_invalid_argument(api, user):
    invalid(
        api.chats.CreateChatSession,
        pb.CreateChatSessionRequest(chat_session=pb.ChatSession(user_id=user.id, project_id="p1")),
        "chat_session.project_id",
    )


def test_get_chat_session_returns_it(api, session):
    assert api.chats.GetChatSession(pb.GetChatSessionRequest(id=session.id)).chat_session == session


def test_get_unknown_chat_session_is_not_found(api):
    assert code_of(api.chats.GetChatSession, pb.GetChatSessionRequest(id="c" + "5" * 24)) == grpc.StatusCode.NOT_FOUND


def test_list_chat_sessions_filters_by_user_and_project(api, user, project):
    about = [
        api.chats.CreateChatSession(
            pb.CreateChatSessionRequest(chat_session=pb.ChatSession(user_id=user.id, project_id=project.id))
        ).chat_session
        for _ in range(2)
    ]
    loose = api.chats.CreateChatSession(pb.CreateChatSessionRequest(chat_session=pb.ChatSession(user_id=user.id))).chat_session
    by_user = api.chats.ListChatSessions(pb.ListChatSessionsRequest(user_id=user.id)).chat_sessions
    assert [s.id for s in by_user] == [loose.id, about[1].id, about[0].id]
    by_project = api.chats.ListChatSessions(pb.ListChatSessionsRequest(user_id=user.id, project_id=project.id)).chat_sessions
    assert [s.id for s in by_project] == [about[1].id, about[0].id]


def test_list_chat_sessions_pages_stay_correct_while_sessions_are_created(api, user):
    def create() -> str:
        return api.chats.CreateChatSession(pb.CreateChatSessionRequest(chat_session=pb.ChatSession(user_id=user.id))).chat_session.id

    before = [create() for _ in range(5)]
    seen: list[str] = []
    token = ""
    while True:
        page = api.chats.ListChatSessions(pb.ListChatSessionsRequest(user_id=user.id, page_size=2, page_token=token))
        seen += [s.id for s in page.chat_sessions]
        create()
        token = page.next_page_token
        if not token:
            break
    assert seen == list(reversed(before))


def test_list_chat_sessions_with_malformed_filter_is_invalid_argument(api):
    invalid(api.chats.ListChatSessions, pb.ListChatSessionsRequest(project_id="nope"), "project_id")


def test_update_chat_session_title_changes_only_the_title(api, session):
    updated = api.chats.UpdateChatSession(
        pb.UpdateChatSessionRequest(chat_session=pb.ChatSession(id=session.id, title="Renamed"), update_mask=mask("title"))
    ).chat_session
    assert updated.title == "Renamed"
    assert updated.project_id == session.project_id


def test_update_chat_session_can_detach_it_from_its_project(api, session):
    updated = api.chats.UpdateChatSession(
        pb.UpdateChatSessionRequest(chat_session=pb.ChatSession(id=session.id), update_mask=mask("project_id"))
    ).chat_session
    assert not updated.HasField("project_id")
    assert updated.title == "Plan"


def test_update_chat_session_to_another_users_project_is_failed_precondition(api, session):
    foreign = other_project(api, other_user(api).id)
    got = failure(
        api.chats.UpdateChatSession,
        pb.UpdateChatSessionRequest(chat_session=pb.ChatSession(id=session.id, project_id=foreign.id), update_mask=mask("project_id")),
    )
    assert got.code == grpc.StatusCode.FAILED_PRECONDITION
    assert api.chats.GetChatSession(pb.GetChatSessionRequest(id=session.id)).chat_session == session


def test_update_chat_session_mask_naming_user_id_is_invalid_argument(api, session):
    invalid(
        api.chats.UpdateChatSession,
        pb.UpdateChatSessionRequest(chat_session=pb.ChatSession(id=session.id, user_id=session.user_id), update_mask=mask("title", "user_id")),
        "update_mask.paths[1]",
    )


def test_update_chat_session_mask_naming_message_count_is_invalid_argument(api, session):
    invalid(
        api.chats.UpdateChatSession,
        pb.UpdateChatSessionRequest(chat_session=pb.ChatSession(id=session.id, message_count=9), update_mask=mask("message_count")),
        "update_mask.paths[0]",
    )


def test_update_chat_session_with_stale_etag_is_aborted(api, session):
    say(api, session.id, "hello")  # a message changes the session's etag
    got = failure(
        api.chats.UpdateChatSession,
        pb.UpdateChatSessionRequest(chat_session=pb.ChatSession(id=session.id, title="x", etag=session.etag), update_mask=mask("title")),
    )
    assert got.code == grpc.StatusCode.ABORTED


def test_delete_chat_session_deletes_its_messages(api, session, database_url):
    say(api, session.id, "one")
    say(api, session.id, "two")
    api.chats.DeleteChatSession(pb.DeleteChatSessionRequest(id=session.id))
    assert code_of(api.chats.GetChatSession, pb.GetChatSessionRequest(id=session.id)) == grpc.StatusCode.NOT_FOUND
    assert code_of(api.chats.ListChatMessages, pb.ListChatMessagesRequest(session_id=session.id)) == grpc.StatusCode.NOT_FOUND
    assert sql_count(database_url, "SELECT count(*) FROM chat_messages WHERE session_id = %s", session.id) == 0


def test_delete_of_unknown_chat_session_is_not_found(api):
    assert code_of(api.chats.DeleteChatSession, pb.DeleteChatSessionRequest(id="c" + "6" * 24)) == grpc.StatusCode.NOT_FOUND


def test_deleting_the_project_keeps_the_session_with_project_cleared(api, session, project):
    api.projects.DeleteProject(project_pb2.DeleteProjectRequest(id=project.id))
    kept = api.chats.GetChatSession(pb.GetChatSessionRequest(id=session.id)).chat_session
    assert not kept.HasField("project_id")


# --- messages ------------------------------------------------------------------


def test_messages_are_numbered_one_to_n_in_order(api, session):
    contents = ["hi", "hello, what shall we build?", "a todo app", "on it"]
    roles = [pb.CHAT_ROLE_USER, pb.CHAT_ROLE_ASSISTANT, pb.CHAT_ROLE_USER, pb.CHAT_ROLE_ASSISTANT]
    added = [say(api, session.id, c, r) for c, r in zip(contents, roles, strict=True)]
    assert [m.sequence for m in added] == [1, 2, 3, 4]
    listed = api.chats.ListChatMessages(pb.ListChatMessagesRequest(session_id=session.id)).messages
    assert list(listed) == added
    assert [m.content for m in listed] == contents
    assert [m.role for m in listed] == roles
    got = api.chats.GetChatSession(pb.GetChatSessionRequest(id=session.id)).chat_session
    assert got.message_count == 4
    assert got.etag != session.etag


def test_add_chat_message_keeps_its_metadata(api, session):
    message = say(api, session.id, "calling a tool", pb.CHAT_ROLE_ASSISTANT, tool="search", args={"q": "todo", "n": 3})
    assert message.metadata["tool"] == "search"
    assert message.metadata["args"]["n"] == 3
    listed = api.chats.ListChatMessages(pb.ListChatMessagesRequest(session_id=session.id)).messages
    assert listed[0].metadata == message.metadata


def test_concurrent_messages_get_distinct_gapless_numbers(api, session):
    sequences = [message.sequence for _, message in race(10, lambda index: say(api, session.id, f"message {index}"))]
    assert sorted(sequences) == list(range(1, 11))
    assert api.chats.GetChatSession(pb.GetChatSessionRequest(id=session.id)).chat_session.message_count == 10


def test_list_chat_messages_pages_in_order(api, session):
    for index in range(5):
        say(api, session.id, f"m{index}")
    seen: list[int] = []
    token = ""
    while True:
        page = api.chats.ListChatMessages(pb.ListChatMessagesRequest(session_id=session.id, page_size=2, page_token=token))
        seen += [m.sequence for m in page.messages]
        token = page.next_page_token
        if not token:
            break
    assert seen == [1, 2, 3, 4, 5]


def test_list_chat_messages_with_a_token_of_another_session_is_invalid_argument(api, session, user):
    for index in range(3):
        say(api, session.id, f"m{index}")
    token = api.chats.ListChatMessages(pb.ListChatMessagesRequest(session_id=session.id, page_size=1)).next_page_token
    other = api.chats.CreateChatSession(pb.CreateChatSessionRequest(chat_session=pb.ChatSession(user_id=user.id))).chat_session
    invalid(api.chats.ListChatMessages, pb.ListChatMessagesRequest(session_id=other.id, page_token=token), "page_token")


def test_add_chat_message_to_unknown_session_is_not_found(api):
    got = failure(
        api.chats.AddChatMessage,
        pb.AddChatMessageRequest(session_id="c" + "7" * 24, message=pb.ChatMessage(role=USER_ROLE, content="x")),
    )
    assert got.code == grpc.StatusCode.NOT_FOUND


def test_add_chat_message_without_role_is_invalid_argument_and_writes_nothing(api, session):
    invalid(
        api.chats.AddChatMessage,
        pb.AddChatMessageRequest(session_id=session.id, message=pb.ChatMessage(content="x")),
        "message.role",
    )
    assert api.chats.GetChatSession(pb.GetChatSessionRequest(id=session.id)).chat_session == session


def test_add_chat_message_with_empty_content_is_invalid_argument(api, session):
    invalid(
        api.chats.AddChatMessage,
        pb.AddChatMessageRequest(session_id=session.id, message=pb.ChatMessage(role=USER_ROLE, content="  ")),
        "message.content",
    )


def test_add_chat_message_with_nul_in_metadata_is_invalid_argument(api, session):
    message = pb.ChatMessage(role=USER_ROLE, content="x")
    message.metadata.update({"note": "a\x00b"})
    got = invalid(api.chats.AddChatMessage, pb.AddChatMessageRequest(session_id=session.id, message=message), "message.metadata.note")
    assert "NUL" in got.violations["message.metadata.note"]


def test_add_chat_message_with_infinite_metadata_number_is_invalid_argument(api, session):
    message = pb.ChatMessage(role=USER_ROLE, content="x")
    message.metadata.fields["score"].CopyFrom(struct_pb2.Value(number_value=float("inf")))
    invalid(api.chats.AddChatMessage, pb.AddChatMessageRequest(session_id=session.id, message=message), "message.metadata.score")
    assert api.chats.GetChatSession(pb.GetChatSessionRequest(id=session.id)).chat_session.message_count == 0


def test_add_chat_message_with_oversized_metadata_is_invalid_argument(api, session):
    message = pb.ChatMessage(role=USER_ROLE, content="x")
    message.metadata.update({"blob": "x" * (64 * 1024 + 1)})
    invalid(api.chats.AddChatMessage, pb.AddChatMessageRequest(session_id=session.id, message=message), "message.metadata")


def test_create_chat_session_of_unknown_user_about_a_project_is_not_found(api, project):
    got = failure(
        api.chats.CreateChatSession,
        pb.CreateChatSessionRequest(chat_session=pb.ChatSession(user_id="c" + "3" * 24, project_id=project.id)),
    )
    assert got.code == grpc.StatusCode.NOT_FOUND
    assert got.resource_type == "user"
