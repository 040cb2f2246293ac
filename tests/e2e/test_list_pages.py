"""CRUD lists are bounded in bytes: with rows of up to a few MiB, every page
carries at most RESPONSE_BYTES of items (and always one), a client with
gRPC's default 4 MiB receive limit reads them all, and the page tokens
resume exactly after the last item sent: every item once, in order."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from buildplatform.v1 import app_spec_pb2, build_pb2, chat_session_pb2, project_pb2, user_pb2
from google.protobuf import struct_pb2

from server.domain.limits import MAX_DOCUMENT_BYTES, RESPONSE_BYTES
from tests.conftest import unique

# Document sizes in bytes: pages hold one, two or several of them.
SIZES = [MAX_DOCUMENT_BYTES, 300_000, 300_000, 300_000, 10, MAX_DOCUMENT_BYTES, 500_000, 600_000, 40, 700_000]
WIDE = "\U0001f600"  # four bytes of UTF-8 per character: the widest text a character limit allows


def document(size: int, tag: str) -> str:
    return (tag + "\n" + "x" * size)[:size] if size > len(tag) else tag[:size]


def read_pages(call: Callable[[Any], Any], request_of: Callable[[str], Any], field: str) -> list[list[Any]]:
    """Every page of a List, through its page tokens, with each page's checks."""
    pages: list[list[Any]] = []
    token = ""
    while True:
        response = call(request_of(token))
        items = list(getattr(response, field))
        assert items, f"page {len(pages)} is empty"
        only_items = type(response)()
        getattr(only_items, field).extend(items)
        assert only_items.ByteSize() <= RESPONSE_BYTES or len(items) == 1, (len(pages), only_items.ByteSize())
        pages.append(items)
        token = response.next_page_token
        if not token:
            return pages
        assert len(pages) < 1000, "the page tokens do not advance"


def assert_every_item_once(pages: list[list[Any]], expected: list[str], key: Callable[[Any], str]) -> None:
    got = [key(item) for page in pages for item in page]
    assert got == expected
    assert len(pages) > 1, "the rows should not fit one page"


def test_app_specs_of_a_megabyte_are_paged_by_bytes(api, project):
    created = [
        api.specs.CreateAppSpec(
            app_spec_pb2.CreateAppSpecRequest(app_spec=app_spec_pb2.AppSpec(project_id=project.id, content=document(size, f"v{i}")))
        ).app_spec.id
        for i, size in enumerate(SIZES)
    ]
    pages = read_pages(
        api.specs.ListAppSpecs,
        lambda token: app_spec_pb2.ListAppSpecsRequest(project_id=project.id, page_size=1000, page_token=token),
        "app_specs",
    )
    assert_every_item_once(pages, created[::-1], lambda spec: spec.id)
    assert any(len(page) > 1 for page in pages), "small specs share a page"


def test_builds_with_a_full_app_spec_and_progress_are_paged_by_bytes(api, user, project):
    created = []
    for i, size in enumerate(SIZES[:6]):
        build = build_pb2.Build(user_id=user.id, project_id=project.id, app_spec=document(size, f"b{i}"))
        build.progress.update({"log": "p" * (250_000 if i % 2 else 10), "step": i})
        created.append(api.builds.CreateBuild(build_pb2.CreateBuildRequest(build=build)).build.id)
    pages = read_pages(
        api.builds.ListBuilds,
        lambda token: build_pb2.ListBuildsRequest(user_id=user.id, page_size=1000, page_token=token),
        "builds",
    )
    assert_every_item_once(pages, created[::-1], lambda build: build.id)


def test_chat_messages_of_a_megabyte_are_paged_by_bytes_in_conversation_order(api, user):
    session = api.chats.CreateChatSession(
        chat_session_pb2.CreateChatSessionRequest(chat_session=chat_session_pb2.ChatSession(user_id=user.id))
    ).chat_session
    for i, size in enumerate(SIZES):
        metadata = struct_pb2.Struct()
        metadata.update({"blob": "m" * 60_000})
        message = chat_session_pb2.ChatMessage(
            role=chat_session_pb2.CHAT_ROLE_ASSISTANT, content=document(size, f"m{i}") or "m", metadata=metadata
        )
        api.chats.AddChatMessage(chat_session_pb2.AddChatMessageRequest(session_id=session.id, message=message))
    pages = read_pages(
        api.chats.ListChatMessages,
        lambda token: chat_session_pb2.ListChatMessagesRequest(session_id=session.id, page_size=1000, page_token=token),
        "messages",
    )
    assert_every_item_once(pages, [str(n) for n in range(1, len(SIZES) + 1)], lambda message: str(message.sequence))


@pytest.mark.parametrize("page_size", [1000, 7])
def test_many_wide_projects_are_paged_by_bytes_and_by_count(api, user, page_size):
    description = WIDE * 2000  # 8000 bytes, the most a description holds
    created = [
        api.projects.CreateProject(
            project_pb2.CreateProjectRequest(project=project_pb2.Project(user_id=user.id, name=WIDE * 200, description=description))
        ).project.id
        for _ in range(160)
    ]
    pages = read_pages(
        api.projects.ListProjects,
        lambda token: project_pb2.ListProjectsRequest(user_id=user.id, page_size=page_size, page_token=token),
        "projects",
    )
    assert_every_item_once(pages, created[::-1], lambda project: project.id)
    assert all(len(page) <= page_size for page in pages)


def test_many_wide_users_and_chat_sessions_are_paged_by_bytes(api, user):
    email = f"{unique('shared')}@example.com"
    users = [
        api.users.CreateUser(
            user_pb2.CreateUserRequest(user=user_pb2.User(clerk_id=WIDE * 180 + unique("c"), email=email, name=WIDE * 200))
        ).user.id
        for _ in range(700)
    ]
    pages = read_pages(
        api.users.ListUsers,
        lambda token: user_pb2.ListUsersRequest(email=email, page_size=1000, page_token=token),
        "users",
    )
    assert_every_item_once(pages, users[::-1], lambda item: item.id)

    sessions = [
        api.chats.CreateChatSession(
            chat_session_pb2.CreateChatSessionRequest(chat_session=chat_session_pb2.ChatSession(user_id=users[0], title=WIDE * 500))
        ).chat_session.id
        for _ in range(600)
    ]
    pages = read_pages(
        api.chats.ListChatSessions,
        lambda token: chat_session_pb2.ListChatSessionsRequest(user_id=users[0], page_size=1000, page_token=token),
        "chat_sessions",
    )
    assert_every_item_once(pages, sessions[::-1], lambda item: item.id)


def test_a_list_of_small_rows_still_fills_a_page_by_count(api, user, project):
    created = [
        api.specs.CreateAppSpec(
            app_spec_pb2.CreateAppSpecRequest(app_spec=app_spec_pb2.AppSpec(project_id=project.id, content=f"v{i}"))
        ).app_spec.id
        for i in range(30)
    ]
    response = api.specs.ListAppSpecs(app_spec_pb2.ListAppSpecsRequest(project_id=project.id, page_size=30))
    assert [spec.id for spec in response.app_specs] == created[::-1]
    assert response.next_page_token == ""
    first = api.specs.ListAppSpecs(app_spec_pb2.ListAppSpecsRequest(project_id=project.id, page_size=29))
    assert len(first.app_specs) == 29 and first.next_page_token
