"""Users on the wire: UserRow -> User, and a request's User -> column values."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from buildplatform.v1 import user_pb2

from server.core.wire import UpdateFields, etag, optional_text
from server.domain.limits import MAX_NAME
from server.domain.validation import Checker
from server.store.rows import UserRow
from server.wellknown import timestamp

UPDATE = UpdateFields.of(user_pb2.User.DESCRIPTOR)
CREATE_FIELDS = ("clerk_id", "email", "name")


def user_to_pb(row: UserRow) -> user_pb2.User:
    return user_pb2.User(
        id=row.id,
        clerk_id=row.clerk_id,
        email=row.email,
        name=row.name,
        create_time=timestamp(row.create_time),
        update_time=timestamp(row.update_time),
        etag=etag(row.revision),
    )


def user_values(user: user_pb2.User, paths: Iterable[str]) -> dict[str, Any]:
    check = Checker()
    values: dict[str, Any] = {}
    for path in paths:
        if path == "clerk_id":
            values["clerk_id"] = check.text("user.clerk_id", user.clerk_id, required=True, max_chars=MAX_NAME)
        elif path == "email":
            values["email"] = check.email("user.email", user.email)
        elif path == "name":
            name = optional_text(user, "name")
            values["name"] = None if name is None else check.text("user.name", name, max_chars=MAX_NAME)
    check.done()
    return values
