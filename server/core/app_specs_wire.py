"""App specs on the wire: AppSpecRow -> AppSpec, and a request's AppSpec -> column values."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from buildplatform.v1 import app_spec_pb2

from server.core.wire import UpdateFields, etag, optional_text
from server.domain.limits import MAX_DOCUMENT_BYTES, MAX_SHORT_TEXT
from server.domain.validation import Checker
from server.store.rows import AppSpecRow
from server.wellknown import timestamp

UPDATE = UpdateFields.of(app_spec_pb2.AppSpec.DESCRIPTOR)
CREATE_FIELDS = ("project_id", "content", "chat_session_id", "summary")


def app_spec_to_pb(row: AppSpecRow) -> app_spec_pb2.AppSpec:
    return app_spec_pb2.AppSpec(
        id=row.id,
        project_id=row.project_id,
        version=row.version,
        content=row.content,
        chat_session_id=row.chat_session_id,
        summary=row.summary,
        create_time=timestamp(row.create_time),
        update_time=timestamp(row.update_time),
        etag=etag(row.revision),
    )


def app_spec_values(spec: app_spec_pb2.AppSpec, paths: Iterable[str]) -> dict[str, Any]:
    check = Checker()
    values: dict[str, Any] = {}
    for path in paths:
        if path == "project_id":
            values["project_id"] = check.id("app_spec.project_id", spec.project_id)
        elif path == "content":
            values["content"] = check.text("app_spec.content", spec.content, required=True, max_bytes=MAX_DOCUMENT_BYTES)
        elif path == "chat_session_id":
            session_id = optional_text(spec, "chat_session_id")
            values["chat_session_id"] = (
                check.id("app_spec.chat_session_id", session_id, required=False) if session_id else None
            )
        elif path == "summary":
            values["summary"] = check.text("app_spec.summary", spec.summary, max_chars=MAX_SHORT_TEXT)
    check.done()
    return values
