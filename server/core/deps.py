"""What the core functions are given: injected, so tests can pin the clock and ids."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import cuid

from server.core.masking import Maskers
from server.core.pagination import PageTokens
from server.store.db import Database

if TYPE_CHECKING:
    from server.live.hub import Hub
    from server.telemetry.metrics import Metrics


def utc_now() -> datetime:
    return datetime.now(UTC)


def new_cuid() -> str:
    value: str = cuid.cuid()
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class Deps:
    db: Database
    tokens: PageTokens
    hub: Hub
    heartbeat_seconds: float
    clock: Callable[[], datetime] = utc_now
    new_id: Callable[[], str] = new_cuid
    metrics: Metrics | None = None   # None: METRICS_ADDRESS is empty
    maskers: Maskers = field(default_factory=Maskers)   # per build appended to (server.core.masking)

    def new_row(self, values: dict[str, Any]) -> dict[str, Any]:
        """`values` of a resource being created, with its id and timestamps."""
        now = self.clock()
        return {**values, "id": self.new_id(), "create_time": now, "update_time": now}
