"""The fields an Update RPC may change come from the contract's
google.api.field_behavior annotations, not from a list kept by hand."""

from __future__ import annotations

import pytest
from buildplatform.v1 import app_spec_pb2, build_pb2, chat_session_pb2, project_pb2, user_pb2
from google.protobuf import field_mask_pb2

from server.core.wire import UpdateFields
from server.domain.errors import InvalidArgument


@pytest.mark.parametrize(
    ("message", "mutable"),
    [
        (user_pb2.User, {"email", "name"}),
        (project_pb2.Project, {"name", "description", "log_retention_days"}),
        (build_pb2.Build, {"app_spec", "sandbox_id", "progress", "output_url", "artifact_key"}),
        (chat_session_pb2.ChatSession, {"title", "project_id"}),
        (app_spec_pb2.AppSpec, {"summary"}),
    ],
)
def test_mutable_fields_are_those_neither_output_only_nor_immutable(message, mutable):
    fields = UpdateFields.of(message.DESCRIPTOR)
    assert set(fields.mutable) == mutable
    # Every other field, the etag (a precondition) included, cannot be changed.
    assert set(fields.immutable) == {f.name for f in message.DESCRIPTOR.fields} - mutable
    assert "etag" in fields.immutable


def test_an_immutable_field_in_a_mask_is_refused_by_name():
    fields = UpdateFields.of(user_pb2.User.DESCRIPTOR)
    with pytest.raises(InvalidArgument) as caught:
        fields.paths(field_mask_pb2.FieldMask(paths=["clerk_id"]))
    assert "cannot be changed" in caught.value.violations[0].description


def test_a_star_mask_is_every_mutable_field_in_field_number_order():
    fields = UpdateFields.of(build_pb2.Build.DESCRIPTOR)
    assert fields.paths(field_mask_pb2.FieldMask(paths=["*"])) == list(fields.mutable)
