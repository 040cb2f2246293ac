"""Input rules, checked before anything reaches PostgreSQL.

PostgreSQL refuses U+0000 in text and jsonb, and jsonb refuses NaN and
infinities; a value that would be refused there is refused here, with
INVALID_ARGUMENT naming the field, so that no client input can surface as an
INTERNAL error. A Checker collects every violation of a request before
raising, so a caller learns about all its mistakes at once.
"""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from server.domain.errors import FieldViolation, InvalidArgument
from server.domain.limits import MAX_EMAIL, MAX_RETENTION_DAYS, MIN_RETENTION_DAYS

ID_PATTERN = re.compile(r"c[0-9a-z]{24}")
EVENT_TYPE_PATTERN = re.compile(r"[a-z][a-z0-9_.:\-]{0,63}")
# A log step's id (LogStep.id).
STEP_ID_PATTERN = re.compile(r"[A-Za-z0-9_.:\-]{1,64}")

JSON = dict[str, Any]

# google.protobuf.Timestamp's documented range, 0001-01-01T00:00:00Z to
# 9999-12-31T23:59:59.999999999Z: also the range of Python's datetime.
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MIN_TIMESTAMP_SECONDS = -62_135_596_800
MAX_TIMESTAMP_SECONDS = 253_402_300_799

# A revision (what an etag names) is counted in a 4-byte signed integer column.
MAX_REVISION = 2**31 - 1


def _nul_path(value: Any, path: str) -> str | None:
    """The path of the first key or string holding U+0000, or None."""
    if isinstance(value, str):
        return path if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            if "\x00" in key:
                return f"{path}.{key!r}"
            found = _nul_path(item, f"{path}.{key}")
            if found:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = _nul_path(item, f"{path}[{index}]")
            if found:
                return found
    return None


def _non_finite_path(value: Any, path: str) -> str | None:
    if isinstance(value, float):
        return None if math.isfinite(value) else path
    if isinstance(value, dict):
        for key, item in value.items():
            found = _non_finite_path(item, f"{path}.{key}")
            if found:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = _non_finite_path(item, f"{path}[{index}]")
            if found:
                return found
    return None


class Checker:
    """Collects field violations; `done()` raises them as one InvalidArgument."""

    __slots__ = ("violations",)

    def __init__(self) -> None:
        self.violations: list[FieldViolation] = []

    def add(self, field: str, description: str) -> None:
        self.violations.append(FieldViolation(field, description))

    def done(self) -> None:
        if self.violations:
            raise InvalidArgument(self.violations)

    def text(
        self,
        field: str,
        value: str,
        *,
        required: bool = False,
        max_chars: int | None = None,
        max_bytes: int | None = None,
    ) -> str:
        if required and not value.strip():
            self.add(field, "is required")
        elif "\x00" in value:
            self.add(field, "must not contain the NUL character (U+0000)")
        elif max_chars is not None and len(value) > max_chars:
            self.add(field, f"must be at most {max_chars} characters, got {len(value)}")
        elif max_bytes is not None and len(value) > max_bytes // 4 and len(value.encode()) > max_bytes:
            self.add(field, f"must be at most {max_bytes} bytes of UTF-8, got {len(value.encode())}")
        return value

    def id(self, field: str, value: str, *, required: bool = True) -> str:
        if not value:
            if required:
                self.add(field, "is required")
        elif not ID_PATTERN.fullmatch(value):
            self.add(field, "must be a CUID (25 characters: 'c' then lowercase letters and digits)")
        return value

    def email(self, field: str, value: str) -> str:
        self.text(field, value, required=True, max_chars=MAX_EMAIL)
        if value and "\x00" not in value and not re.fullmatch(r"[^@\s]+@[^@\s]+", value):
            self.add(field, "must be an email address")
        return value

    def json(self, field: str, value: JSON | None, *, max_bytes: int, wire_bytes: int = 0) -> str | None:
        """Validate a JSON object and return it serialized, or None when absent.

        The limit holds for the JSON stored and for `wire_bytes`, the value's
        serialized size as a google.protobuf.Struct, which every response
        carrying it pays: up to 5.5 times the JSON's (each number of `[0,0]`
        is 2 bytes of JSON and 11 of Struct)."""
        if value is None:
            return None
        nul = _nul_path(value, field)
        if nul:
            self.add(nul, "must not contain the NUL character (U+0000)")
            return None
        bad_number = _non_finite_path(value, field)
        if bad_number:
            self.add(bad_number, "must be a finite number (JSON has no NaN or Infinity)")
            return None
        encoded = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        if wire_bytes > max_bytes:
            self.add(field, f"must be at most {max_bytes} bytes serialized, got {wire_bytes}")
        elif len(encoded) > max_bytes // 4 and len(encoded.encode()) > max_bytes:
            self.add(field, f"must be at most {max_bytes} bytes as JSON, got {len(encoded.encode())}")
        return encoded

    def timestamp(self, field: str, seconds: int, nanos: int) -> datetime | None:
        """The instant of a google.protobuf.Timestamp, to the microsecond; None
        (and a violation) outside the range the Timestamp type documents."""
        if not MIN_TIMESTAMP_SECONDS <= seconds <= MAX_TIMESTAMP_SECONDS:
            self.add(field, "must be between 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z")
            return None
        if not 0 <= nanos <= 999_999_999:
            self.add(f"{field}.nanos", "must be between 0 and 999999999")
            return None
        # Exact integer arithmetic: fromtimestamp() fails at the range's ends.
        return EPOCH + timedelta(seconds=seconds, microseconds=nanos // 1000)

    def revision(self, field: str, value: str) -> int | None:
        """The revision an etag names, None when empty; a violation when the
        etag cannot have been issued (not digits, or beyond any revision)."""
        if not value:
            return None
        if not (value.isascii() and value.isdigit()) or len(value) > 10 or int(value) > MAX_REVISION:
            self.add(field, "is not an etag issued by this API")
            return None
        return int(value)

    def retention_days(self, field: str, value: int | None) -> int | None:
        """A log retention in days, None for the server's default (unset or 0)."""
        if not value:
            return None
        if not MIN_RETENTION_DAYS <= value <= MAX_RETENTION_DAYS:
            self.add(field, f"must be between {MIN_RETENTION_DAYS} and {MAX_RETENTION_DAYS} days, got {value} "
                            "(leave it unset for the server's default, LOG_RETENTION_DAYS)")
            return None
        return value

    def page_size(self, field: str, value: int, *, default: int, maximum: int) -> int:
        if value == 0:
            return default
        if value < 0 or value > maximum:
            self.add(field, f"must be between 1 and {maximum} (0 means {default})")
            return default
        return value
