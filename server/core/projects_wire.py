"""Projects on the wire: ProjectRow -> Project, and a request's Project -> column values."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from buildplatform.v1 import project_pb2

from server.core.wire import UpdateFields, etag, optional_text
from server.domain.limits import MAX_NAME, MAX_SHORT_TEXT
from server.domain.validation import Checker
from server.store.rows import ProjectRow
from server.wellknown import timestamp

UPDATE = UpdateFields.of(project_pb2.Project.DESCRIPTOR)
CREATE_FIELDS = ("user_id", "name", "description", "log_retention_days")


def project_to_pb(row: ProjectRow) -> project_pb2.Project:
    return project_pb2.Project(
        id=row.id,
        user_id=row.user_id,
        name=row.name,
        description=row.description,
        create_time=timestamp(row.create_time),
        update_time=timestamp(row.update_time),
        etag=etag(row.revision),
        # Unset when the project keeps the server's default (LOG_RETENTION_DAYS):
        # a read says what was set, not the default of the moment.
        log_retention_days=row.log_retention_days,
    )


def project_values(project: project_pb2.Project, paths: Iterable[str]) -> dict[str, Any]:
    check = Checker()
    values: dict[str, Any] = {}
    for path in paths:
        if path == "user_id":
            values["user_id"] = check.id("project.user_id", project.user_id)
        elif path == "name":
            values["name"] = check.text("project.name", project.name, required=True, max_chars=MAX_NAME)
        elif path == "description":
            description = optional_text(project, "description")
            values["description"] = (
                None if description is None else check.text("project.description", description, max_chars=MAX_SHORT_TEXT)
            )
        elif path == "log_retention_days":
            days = project.log_retention_days if project.HasField("log_retention_days") else None
            values["log_retention_days"] = check.retention_days("project.log_retention_days", days)
    check.done()
    return values
