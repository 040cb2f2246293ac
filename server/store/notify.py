"""LISTEN/NOTIFY fan-out: one listening connection per process.

Writers send `pg_notify` inside their transaction (server.store.feeds,
server.store.builds); PostgreSQL delivers it on commit to every replica. A
notification is only a hint that something changed: followers always read
the rows themselves, so a lost notification (a listener reconnect) costs
latency, never data. After a reconnect every feed and watcher re-reads.

For each build followed in this process there is one Feed per kind (logs,
events). On a wake-up the feed reads the new rows ONCE (one query per build
per wake-up, whatever the number of followers), converts them to messages
once, and keeps the most recent ones in a bounded ring. Followers pull from
the ring with their own cursor. A follower too slow for the ring (its cursor
fell behind the ring's start) reads its own catch-up pages from the
database, so a slow client costs neither memory nor the other followers'
latency.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any, NamedTuple

import psycopg

from server.domain.status import TERMINAL, BuildStatus
from server.store import feeds
from server.store.builds import BUILD_CHANNEL
from server.store.db import Database, DatabaseRejected, DatabaseUnavailable, connect, ping
from server.store.feeds import Kind

log = logging.getLogger(__name__)

RING_CAPACITY = 8192   # rows kept per followed build and kind
READ_PAGE = 2000       # rows per feed read


class Entry(NamedTuple):
    """A row converted once for every follower: its sequence, the value
    stream filters look at (level or type), and the row serialized as an
    element of the stream response's repeated field."""

    seq: int
    value: str
    wire: bytes


def _seq(entry: Entry) -> int:
    return entry.seq


class Feed:
    """The rows of one build and kind that this process has read, for its followers."""

    def __init__(self, hub: Hub, kind: Kind, build_id: str, to_entry: Callable[[dict[str, Any]], Entry]) -> None:
        self.hub = hub
        self.kind = kind
        self.build_id = build_id
        self.to_entry = to_entry
        self.followers: set[asyncio.Event] = set()
        self.entries: list[Entry] = []          # the ring, in sequence order
        self.base = 0          # the ring holds exactly the rows with base < seq <= head
        self.head: int | None = None            # None until the first read
        self.final: int | None = None           # last sequence once the build finished
        self._wanted = 0       # highest sequence announced by a notification
        self._announcements = 0
        self._stale = False    # the build's position must be read again
        self._task: asyncio.Task[None] | None = None

    # -- reading ---------------------------------------------------------------

    def announce(self, seq: int) -> None:
        self._announcements += 1
        if seq > self._wanted:
            self._wanted = seq
        if self.head is None or self._wanted > self.head:
            self._schedule()

    def refresh(self) -> None:
        """Read the build's position again before anything else: after the
        LISTEN connection was lost, notifications may have been missed."""
        self._stale = True
        self._announcements += 1
        self._schedule()

    def finished(self, final: int) -> None:
        self.final = final
        self.announce(final)
        self.wake()

    def _schedule(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._pump())

    async def _pump(self) -> None:
        try:
            while True:
                if self.head is None or self._stale:
                    self._stale = False
                    async with self.hub.db.connection() as conn:
                        status, last = await feeds.build_position(conn, self.kind, self.build_id)
                    if self.head is None:
                        self.head = self.base = last
                    self._wanted = max(self._wanted, last)
                    if status in TERMINAL:
                        self.final = last
                if self._wanted <= self.head:
                    break
                announcements = self._announcements
                async with self.hub.db.connection() as conn:
                    rows = await feeds.read_after(conn, self.kind, self.build_id, self.head, READ_PAGE)
                if not rows:
                    # A notification that arrived during the read may name a
                    # row the read's snapshot missed: read again. Otherwise
                    # the announced rows are gone (the build was deleted).
                    if announcements != self._announcements:
                        continue
                    break
                self.entries.extend(self.to_entry(row) for row in rows)
                self.head = rows[-1]["seq"]
                if len(self.entries) > RING_CAPACITY:
                    drop = len(self.entries) - RING_CAPACITY
                    self.base = self.entries[drop - 1].seq
                    del self.entries[:drop]
                self.wake()
        except Exception:  # the next notification or heartbeat retries
            log.exception("reading %ss of build %s failed", self.kind.name, self.build_id)
        finally:
            self.wake()

    def wake(self) -> None:
        for event in self.followers:
            event.set()

    # -- following -------------------------------------------------------------

    def covers(self, cursor: int) -> bool:
        return self.head is not None and cursor >= self.base

    def after(self, cursor: int, max_bytes: int) -> list[Entry]:
        """Entries of the ring after `cursor` (which must be covered), up to
        about max_bytes of messages."""
        start = bisect.bisect_right(self.entries, cursor, key=_seq)
        taken = 0
        end = start
        while end < len(self.entries) and taken < max_bytes:
            taken += len(self.entries[end].wire)
            end += 1
        return self.entries[start:end]


class Hub:
    """The process's LISTEN connection and the feeds and watchers it wakes."""

    def __init__(self, db: Database, database_url: str, *, check_seconds: float = 5.0) -> None:
        self.db = db
        self.url = database_url
        self.check_seconds = check_seconds
        self.feeds: dict[tuple[str, str], Feed] = {}
        self.watchers: dict[str, set[asyncio.Event]] = {}
        self.connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.shutting_down = False

    def start(self) -> None:
        """Listen in the background; the server does not wait for it (a
        server may start while the database is down)."""
        self._task = asyncio.create_task(self._listen())

    def begin_shutdown(self) -> None:
        """Wake every follower and watcher so that they end their streams now."""
        self.shutting_down = True
        for events in self.watchers.values():
            for event in events:
                event.set()
        for feed in self.feeds.values():
            feed.wake()

    async def close(self) -> None:
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _listen(self) -> None:
        backoff = 0.1
        while not self._closing:
            try:
                conn = await connect(self.url, timeout=self.db.timeout, name="buildplatform-listen")
                async with conn:
                    for channel in (BUILD_CHANNEL, feeds.LOGS.channel, feeds.EVENTS.channel):
                        await conn.execute(f"LISTEN {channel}")
                    self.connected.set()
                    backoff = 0.1
                    self._wake_everything()  # whatever was sent while we were away
                    while True:
                        async for note in conn.notifies(timeout=self.check_seconds):
                            self._dispatch(note.channel, note.payload)
                        # A quiet spell: make sure the connection is alive. A
                        # frozen or partitioned server sends no reset, and
                        # without this check we would wait for it forever.
                        await ping(conn, timeout=self.db.timeout)
            except (psycopg.Error, OSError, DatabaseUnavailable, DatabaseRejected) as error:
                was_connected = self.connected.is_set()
                self.connected.clear()
                if self._closing:
                    return
                if was_connected:
                    # Followers check the database now: if it is gone, their
                    # streams end with UNAVAILABLE and a resume cursor.
                    self._wake_everything()
                log.warning("LISTEN connection lost (%s); reconnecting in %.1fs", error, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    def _dispatch(self, channel: str, payload: str) -> None:
        if channel == BUILD_CHANNEL:
            build_id, status, last_log, last_event = payload.split(" ")
            for event in self.watchers.get(build_id, ()):
                event.set()
            if BuildStatus(status) in TERMINAL:
                for kind, last in ((feeds.LOGS, last_log), (feeds.EVENTS, last_event)):
                    feed = self.feeds.get((kind.name, build_id))
                    if feed is not None:
                        feed.finished(int(last))
            return
        build_id, seq = payload.split(" ")
        kind = feeds.LOGS if channel == feeds.LOGS.channel else feeds.EVENTS
        feed = self.feeds.get((kind.name, build_id))
        if feed is not None:
            feed.announce(int(seq))

    def _wake_everything(self) -> None:
        for events in self.watchers.values():
            for event in events:
                event.set()
        for feed in self.feeds.values():
            feed.refresh()
            feed.wake()

    @contextlib.asynccontextmanager
    async def follow(
        self, kind: Kind, build_id: str, to_entry: Callable[[dict[str, Any]], Entry]
    ) -> AsyncIterator[tuple[Feed, asyncio.Event]]:
        """Register a follower of a build's feed; yields the feed and the
        follower's wake-up event. Register BEFORE reading the backlog, so
        nothing committed in between is missed."""
        key = (kind.name, build_id)
        feed = self.feeds.get(key)
        if feed is None:
            feed = self.feeds[key] = Feed(self, kind, build_id, to_entry)
            feed.announce(0)  # first read: the build's position
        event = asyncio.Event()
        feed.followers.add(event)
        try:
            yield feed, event
        finally:
            feed.followers.discard(event)
            if not feed.followers and self.feeds.get(key) is feed:
                del self.feeds[key]
                if feed._task is not None and not feed._task.done():
                    feed._task.cancel()

    @contextlib.asynccontextmanager
    async def watch_build(self, build_id: str) -> AsyncIterator[asyncio.Event]:
        event = asyncio.Event()
        self.watchers.setdefault(build_id, set()).add(event)
        try:
            yield event
        finally:
            watchers = self.watchers.get(build_id)
            if watchers is not None:
                watchers.discard(event)
                if not watchers:
                    del self.watchers[build_id]
