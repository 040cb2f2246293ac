"""The process's coalescing notifier: appends commit with no NOTIFY.

`NOTIFY` in a transaction takes a database-wide lock at commit and holds it
through the WAL flush, so notifying commits run one at a time (measured in
bench `scale`). Appends therefore commit plain, and tell this notifier what
they wrote (`note(kind, build_id, last)`) after their commit. At most once
per tick (NOTIFY_TICK_SECONDS, a few ms; at once after a quiet tick) it
sends what changed since the last one on
a connection of its own, in autocommit, outside every writer's transaction:
one statement, one commit, one notification per channel naming every build
that changed and its new last sequence (`"<id> <seq> <id> <seq> ..."`, split
below PostgreSQL's 8000-byte payload limit). So one process makes at most
one notifying commit per tick, whatever the number of builds appending.

A notification remains a hint: followers always read the rows. If the
process dies between an append's commit and the tick that would announce it,
followers on other replicas learn of the lines from the hub's slow poll of
followed builds (FEED_POLL_SECONDS); followers in this process are woken at
commit directly (server.live.hub.Hub.appended), with no round trip.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from typing import Any

import psycopg

from server.store.db import DatabaseRejected, DatabaseUnavailable, connect

log = logging.getLogger(__name__)

PAYLOAD_BYTES = 7900   # PostgreSQL refuses payloads of 8000 bytes or more
# Test hook: "stall" makes the notifier note appends but never send them (a
# process that dies between commit and notify); tests then SIGKILL it.
FAULT_ENV = "BUILDPLATFORM_NOTIFIER_FAULT"

SEND = "SELECT count(pg_notify(c, p)) FROM unnest(%s::text[], %s::text[]) AS t(c, p)"


def payloads(changed: dict[str, int]) -> list[str]:
    """`changed` (build id -> last sequence) as payloads "<id> <seq> ...",
    each below PAYLOAD_BYTES."""
    out: list[str] = []
    parts: list[str] = []
    size = 0
    for build_id, seq in changed.items():
        part = f"{build_id} {seq}"
        if parts and size + 1 + len(part) > PAYLOAD_BYTES:
            out.append(" ".join(parts))
            parts, size = [], 0
        size += len(part) + (1 if parts else 0)
        parts.append(part)
    if parts:
        out.append(" ".join(parts))
    return out


class Notifier:
    """Coalesces the process's appends into at most one notifying commit per tick."""

    def __init__(self, database_url: str, *, tick_seconds: float = 0.005, timeout: float = 5.0) -> None:
        self.url = database_url
        self.tick = tick_seconds
        self.timeout = timeout
        self._pending: dict[str, dict[str, int]] = {}   # channel -> build id -> last sequence
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._stalled = os.environ.get(FAULT_ENV, "") == "stall"
        self.sent = 0          # notifying commits made (for tests and the bench)
        self.sending = 0.0     # seconds spent sending them

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error, OSError):
                await self._conn.close()

    def note(self, channel: str, build_id: str, last: int) -> None:
        """An append of build_id committed up to sequence `last` (channel: its kind's)."""
        builds = self._pending.setdefault(channel, {})
        if builds.get(build_id, -1) < last:
            builds[build_id] = last
        self._ready.set()

    async def _run(self) -> None:
        backoff = 0.1
        loop = asyncio.get_running_loop()
        last_sent = -self.tick
        while True:
            await self._ready.wait()
            # Coalesce: whatever commits within a tick of the last send goes
            # in the next one; after a quiet tick the first goes out at once.
            wait = last_sent + self.tick - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            last_sent = loop.time()
            if self._stalled:
                self._ready.clear()
                continue
            self._ready.clear()
            pending, self._pending = self._pending, {}
            channels: list[str] = []
            texts: list[str] = []
            for channel, changed in pending.items():
                for text in payloads(changed):
                    channels.append(channel)
                    texts.append(text)
            if not texts:
                continue
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = await connect(self.url, timeout=self.timeout, name="buildplatform-notify")
                    # A notification holds no data (the rows committed,
                    # durably, before it was noted), so its commit need not
                    # wait for the WAL flush behind every append's: measured
                    # 76-96 ms with it on a busy disk (bench scale), and a
                    # notification lost in a crash is the poll's to cover.
                    await self._conn.execute("SET synchronous_commit = off")
                async with asyncio.timeout(self.timeout):
                    await self._conn.execute(SEND, (channels, texts))
                self.sent += 1
                self.sending += loop.time() - last_sent
                backoff = 0.1
            except (psycopg.Error, OSError, TimeoutError, DatabaseUnavailable, DatabaseRejected) as error:
                # Keep what was not sent (newer notes win); the followers'
                # poll covers the time we are away.
                for channel, changed in pending.items():
                    builds = self._pending.setdefault(channel, {})
                    for build_id, seq in changed.items():
                        if builds.get(build_id, -1) < seq:
                            builds[build_id] = seq
                self._ready.set()
                if self._conn is not None:
                    with contextlib.suppress(psycopg.Error, OSError):
                        await self._conn.close()
                    self._conn = None
                log.warning("sending notifications failed (%s); retrying in %.1fs", error, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
