"""What every service's converters share: well-known types, etags, ids,
update masks, page sizes.

The fields an Update RPC may change are read from the contract, never
written by hand: a field annotated `google.api.field_behavior` OUTPUT_ONLY,
IMMUTABLE or IDENTIFIER cannot be named in an update mask, every other one
can (`UpdateFields.of`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from google.api import field_behavior_pb2
from google.protobuf import field_mask_pb2, timestamp_pb2
from google.protobuf.descriptor import Descriptor
from google.protobuf.message import Message

from server.domain.errors import InvalidArgument
from server.domain.limits import MAX_PAGE_SIZE, PAGE_SIZE
from server.domain.validation import Checker

# --- well-known types (the writers are in server.wellknown, shared with server.live) ---


def from_timestamp(value: timestamp_pb2.Timestamp, *, field: str = "since_time") -> datetime:
    """The instant of a request's Timestamp (since_time is the only one the
    API takes); INVALID_ARGUMENT outside Timestamp's range."""
    check = Checker()
    instant = check.timestamp(field, value.seconds, value.nanos)
    check.done()
    assert instant is not None
    return instant


def optional_text(msg: Message, name: str) -> str | None:
    value: str | None = getattr(msg, name) if msg.HasField(name) else None
    return value


# --- request fields -----------------------------------------------------------


def etag(revision: int) -> str:
    return str(revision)


def parse_etag(field: str, value: str) -> int | None:
    """The revision an etag names, None when empty; INVALID_ARGUMENT when forged."""
    check = Checker()
    revision = check.revision(field, value)
    check.done()
    return revision


def require_message(field: str, present: bool) -> None:
    if not present:
        raise InvalidArgument.one(field, "is required")


def validate_id(field: str, value: str) -> str:
    check = Checker()
    check.id(field, value)
    check.done()
    return value


def filter_id(field: str, value: str) -> str:
    """An optional id filter of a List: empty, or a valid id."""
    if value:
        validate_id(field, value)
    return value


def page_size(value: int, default: int = PAGE_SIZE, maximum: int = MAX_PAGE_SIZE) -> int:
    check = Checker()
    size = check.page_size("page_size", value, default=default, maximum=maximum)
    check.done()
    return size


# --- update masks -------------------------------------------------------------

_FROZEN = frozenset({field_behavior_pb2.OUTPUT_ONLY, field_behavior_pb2.IMMUTABLE, field_behavior_pb2.IDENTIFIER})


@dataclass(frozen=True, slots=True)
class UpdateFields:
    """The fields of a resource an update mask may name (in field-number
    order, which is also what "*" expands to) and those it may not."""

    mutable: tuple[str, ...]
    immutable: tuple[str, ...]

    @classmethod
    def of(cls, message: Descriptor) -> UpdateFields:
        mutable, immutable = [], []
        for field in message.fields:
            behaviors = set(field.GetOptions().Extensions[field_behavior_pb2.field_behavior])
            # The etag is the update's precondition (AIP-154), not a value it sets.
            if behaviors & _FROZEN or field.name == "etag":
                immutable.append(field.name)
            else:
                mutable.append(field.name)
        return cls(tuple(mutable), tuple(immutable))

    def paths(self, mask: field_mask_pb2.FieldMask) -> list[str]:
        return mask_paths(mask, self.mutable, immutable=self.immutable)


def mask_paths(
    mask: field_mask_pb2.FieldMask, mutable: Iterable[str], *, immutable: Iterable[str] = ()
) -> list[str]:
    """The validated paths of an update mask; "*" means every mutable field."""
    allowed = list(mutable)
    frozen = set(immutable)
    check = Checker()
    if not mask.paths:
        check.add("update_mask", f"is required: name the fields to update ({', '.join(allowed)}) or '*'")
    paths = allowed if list(mask.paths) == ["*"] else list(mask.paths)
    for index, path in enumerate(paths):
        if path in frozen:
            check.add(f"update_mask.paths[{index}]", f"{path!r} cannot be changed")
        elif path not in allowed:
            check.add(
                f"update_mask.paths[{index}]",
                f"{path!r} is not an updatable field; updatable: {', '.join(allowed)}",
            )
    check.done()
    return paths
