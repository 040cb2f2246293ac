"""Opaque, tamper-evident page tokens, and pages cut at a byte budget.

A token is base64url(JSON) + "." + base64url(HMAC-SHA256 tag). The JSON
holds the position to resume after (a keyset, never an offset) and a digest
of the List it was issued by and of the request's filters, so a token cannot
be forged, edited, or replayed on another List or with other filters: each
of those is INVALID_ARGUMENT on page_token. Every replica must share the
key: PAGE_TOKEN_SECRET, or the random one kept in the database, which the
server loads when the database first answers (`PageTokens.use`).

A page carries at most RESPONSE_BYTES of serialized items, and always at
least one (`fit`); its token resumes right after the last item sent, however
many rows the store fetched.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any, Protocol, TypeVar

from google.protobuf.message import Message

from server.domain.errors import InvalidArgument, Unavailable
from server.domain.limits import RESPONSE_BYTES
from server.store.crud import Page

M = TypeVar("M", bound=Message)
R = TypeVar("R")

# What a List fetches from the database per page, by estimate (the exact cut
# at RESPONSE_BYTES happens on the serialized items, `fit`).
FETCH_BUDGET = RESPONSE_BYTES


def _varint_size(value: int) -> int:
    return max(1, (value.bit_length() + 6) // 7)


def fit(rows: Iterable[R], to_pb: Callable[[R], M], budget: int = RESPONSE_BYTES) -> list[M]:
    """The items of the longest prefix of `rows` whose serialized size, as
    elements of a repeated field, is at most `budget` bytes; at least one."""
    items: list[M] = []
    used = 0
    for row in rows:
        item = to_pb(row)
        size = item.ByteSize()
        size += 1 + _varint_size(size)  # the field's tag and the item's length
        if items and used + size > budget:
            break
        items.append(item)
        used += size
    return items


class Keyed(Protocol):
    @property
    def create_time(self) -> datetime: ...
    @property
    def id(self) -> str: ...


def keyset_position(row: Any) -> list[Any]:
    """Where a newest-first (create_time, id) list resumes after `row` (a Keyed row)."""
    return [row.create_time.isoformat(), row.id]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class PageTokens:
    def __init__(self, secret: str | None = None) -> None:
        self._key: bytes | None = None
        if secret is not None:
            self.use(secret)

    def use(self, secret: str) -> None:
        """Sign and check with `secret` from now on."""
        self._key = hashlib.sha256(secret.encode()).digest()

    def _tag(self, body: bytes) -> bytes:
        if self._key is None:
            raise Unavailable("the server is starting: its page-token key is not loaded yet; retry", retry_after=1.0)
        return hmac.new(self._key, body, hashlib.sha256).digest()[:16]

    @staticmethod
    def _filters(kind: str, filters: Any) -> str:
        raw = json.dumps([kind, filters], sort_keys=True, default=str).encode()
        return hashlib.sha256(raw).hexdigest()[:16]

    def encode(self, kind: str, filters: Any, position: list[Any]) -> str:
        body = json.dumps({"f": self._filters(kind, filters), "p": position}, separators=(",", ":"))
        raw = body.encode()
        return f"{_b64(raw)}.{_b64(self._tag(raw))}"

    def decode(self, token: str, kind: str, filters: Any, *, field: str = "page_token") -> list[Any] | None:
        """The position stored in `token`, or None for an empty token."""
        if not token:
            return None
        try:
            body_part, tag_part = token.split(".")
            raw = _unb64(body_part)
            valid = hmac.compare_digest(self._tag(raw), _unb64(tag_part))
            data = json.loads(raw) if valid else None
        except (ValueError, UnicodeDecodeError):
            data = None
        if not isinstance(data, dict) or not isinstance(data.get("p"), list):
            raise InvalidArgument.one(field, "is not a page token issued by this API")
        if data.get("f") != self._filters(kind, filters):
            raise InvalidArgument.one(field, "was issued for a request with other filters")
        position: list[Any] = data["p"]
        return position

    def respond(
        self,
        kind: str,
        filters: Any,
        page: Page[R],
        to_pb: Callable[[R], M],
        position: Callable[[R], list[Any]] = keyset_position,
    ) -> tuple[list[M], str]:
        """A page's items within the byte budget, and the token that resumes
        after the last of them ("" when nothing follows)."""
        items = fit(page.rows, to_pb)
        if not page.more_after(len(items)):
            return items, ""
        return items, self.encode(kind, filters, position(page.rows[len(items) - 1]))

    # Keyset helpers for the (create_time, id) newest-first order.
    def encode_keyset(self, kind: str, filters: Any, after: tuple[datetime, str] | None) -> str:
        if after is None:
            return ""
        return self.encode(kind, filters, [after[0].isoformat(), after[1]])

    def decode_keyset(self, token: str, kind: str, filters: Any) -> tuple[datetime, str] | None:
        position = self.decode(token, kind, filters)
        if position is None:
            return None
        try:
            return datetime.fromisoformat(position[0]), str(position[1])
        except (ValueError, IndexError, TypeError):
            raise InvalidArgument.one("page_token", "is not a page token issued by this API") from None
