"""A small bounded cache of verified credentials, keyed by their digest."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from server.domain.access import Principal


class CredentialCache:
    """Principals of recently verified credentials, for at most `seconds`
    each and never past the credential's own expiry; at most `size` of them
    (the least recently used goes first). A revoked token is therefore
    refused at most `seconds` after its revocation."""

    def __init__(self, *, seconds: float = 10.0, size: int = 10_000, clock: Callable[[], float] = time.time) -> None:
        self.seconds = seconds
        self.size = size
        self.clock = clock
        self._entries: OrderedDict[bytes, tuple[Principal, float]] = OrderedDict()

    def get(self, key: bytes) -> Principal | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        principal, until = entry
        if self.clock() >= until:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return principal

    def put(self, key: bytes, principal: Principal) -> None:
        until = self.clock() + self.seconds
        if principal.expire_time is not None:
            until = min(until, principal.expire_time)
        self._entries[key] = (principal, until)
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
