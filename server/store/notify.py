"""LISTEN/NOTIFY fan-out: one listening connection per process.

Writers send `pg_notify` inside their transaction (server.store.feeds,
server.store.builds); PostgreSQL delivers it on commit to every replica. A
notification is only a hint that something changed: followers always read
the rows themselves, so a lost notification (a listener reconnect) costs
latency, never data. After a reconnect every feed and watcher re-reads.

For each build followed in this process there is one Feed per kind (logs,
events). On a wake-up the feed reads the new rows ONCE (one query per build
per wake-up, whatever the number of followers), converts them to messages
once, and keeps the most recent ones in a ring bounded in rows and in bytes
(FEED_RING_BYTES); the rings of all followed builds together are bounded too
(FEED_TOTAL_BYTES), by evicting the oldest entries of the largest rings.
Followers pull from the ring with their own cursor. A follower too slow for
the ring (its cursor fell behind the ring's start) reads its own catch-up
pages from the database, so a slow client costs neither memory nor the
other followers' latency. A follower that stops reading is held by HTTP/2
flow control: grpc.aio stops resuming its handler once a few messages are
queued for the connection (measured in docs/streaming.md), so it holds at
most those, never a queue of its own.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import contextvars
import logging
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, NamedTuple

import psycopg

from server.domain.limits import RESPONSE_BYTES
from server.domain.status import TERMINAL, BuildStatus
from server.store import feeds
from server.store.builds import BUILD_CHANNEL
from server.store.db import Database, DatabaseRejected, DatabaseUnavailable, connect, ping
from server.store.feeds import Kind

if TYPE_CHECKING:
    from server.telemetry.metrics import Metrics

log = logging.getLogger(__name__)

RING_CAPACITY = 8192   # rows kept per followed build and kind (and FEED_RING_BYTES)
READ_PAGE = 2000       # rows per feed read (and READ_BYTES)
# Bytes per feed read, at most (and at most the ring's bound): a feed holds
# one read's rows and their messages at once beside its ring.
READ_BYTES = RESPONSE_BYTES


class Entry(NamedTuple):
    """A row converted once for every follower: its sequence, the value
    stream filters look at (level or type), the row serialized as an
    element of the stream response's repeated field, and its create_time
    (seconds since the epoch: set by the appending transaction, it is where
    the delivery lag a stream measures starts)."""

    seq: int
    value: str
    wire: bytes
    time: float = 0.0


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
        # ends[i]: bytes of every entry this feed ever kept up to entries[i]
        # included, so the entries after a cursor that fit a budget are two
        # bisections away, whatever the ring holds.
        self.ends: list[int] = []
        self.bytes = 0         # sum of len(entry.wire) over the ring
        self.error: DatabaseUnavailable | None = None  # the last read failed with this
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
            # In a context of its own: the reads serve every follower, so they
            # must not inherit the deadline (or the trace) of the follower
            # whose notification or arrival happened to start them.
            self._task = asyncio.create_task(self._pump(), context=contextvars.Context())

    async def _pump(self) -> None:
        woke = False  # followers were woken after the last change they must see
        try:
            while True:
                if self.head is None or self._stale:
                    woke = False
                    self._stale = False
                    status, last = await feeds.position(self.hub.db, self.kind, self.build_id)
                    self.error = None
                    if self.head is None:
                        self.head = self.base = last
                    self._wanted = max(self._wanted, last)
                    if status in TERMINAL:
                        self.final = last
                if self._wanted <= self.head:
                    break
                announcements = self._announcements
                read = await feeds.read(self.hub.db, feeds.Read(
                    self.kind, self.build_id, self.head,
                    limit=READ_PAGE, max_bytes=max(1, min(READ_BYTES, self.hub.ring_bytes)),
                ))
                if not read.rows:
                    # A notification that arrived during the read may name a
                    # row the read's snapshot missed: read again. Otherwise
                    # the announced rows are gone (the build was deleted).
                    if announcements != self._announcements:
                        continue
                    break
                self.error = None
                self.keep([self.to_entry(row) for row in read.rows])
                self.wake()
                woke = True
        except Exception as error:  # the next notification or heartbeat retries
            woke = False
            # Followers that have sent all the ring holds end with UNAVAILABLE
            # and their cursor (server.core.feeds) instead of waiting on a
            # feed that cannot read.
            if isinstance(error, DatabaseUnavailable):
                self.error = error
                log.warning("reading %ss of build %s failed: %s", self.kind.name, self.build_id, error)
            else:
                log.exception("reading %ss of build %s failed", self.kind.name, self.build_id)
        finally:
            if not woke:  # an error, a new final position, or nothing new: let followers look
                self.wake()

    def keep(self, entries: list[Entry]) -> None:
        """Add newly read entries to the ring, then hold it to its bounds."""
        before = end = self.ends[-1] if self.ends else 0
        for entry in entries:
            end += len(entry.wire)
            self.ends.append(end)
        added = end - before
        self.entries.extend(entries)
        self.head = entries[-1].seq
        self.bytes += added
        self.hub.ring_total += added
        self.shrink_to(self.hub.ring_bytes)
        self.hub.hold_total()

    def shrink_to(self, max_bytes: int) -> None:
        """Evict the oldest entries until the ring holds at most RING_CAPACITY
        rows and max_bytes; followers behind the new start read the database."""
        drop = max(len(self.entries) - RING_CAPACITY, 0)
        kept = self.bytes - sum(len(entry.wire) for entry in self.entries[:drop])
        while kept > max_bytes and drop < len(self.entries):
            kept -= len(self.entries[drop].wire)
            drop += 1
        if drop == 0:
            return
        self.hub.ring_total -= self.bytes - kept
        self.bytes = kept
        self.base = self.entries[drop - 1].seq
        del self.entries[:drop]
        del self.ends[:drop]

    def wake(self) -> None:
        for event in self.followers:
            event.set()

    # -- following -------------------------------------------------------------

    def covers(self, cursor: int) -> bool:
        return self.head is not None and cursor >= self.base

    def after(self, cursor: int, max_bytes: int) -> list[Entry]:
        """Entries of the ring after `cursor` (which must be covered): as many
        as fit in max_bytes of messages, and at least one."""
        start = bisect.bisect_right(self.entries, cursor, key=_seq)
        if start == len(self.entries):
            return []
        begin = self.ends[start] - len(self.entries[start].wire)
        stop = max(bisect.bisect_right(self.ends, begin + max_bytes, lo=start), start + 1)
        return self.entries[start:stop]


class Hub:
    """The process's LISTEN connection and the feeds and watchers it wakes."""

    def __init__(
        self,
        db: Database,
        database_url: str,
        *,
        check_seconds: float = 5.0,
        heartbeat_seconds: float = 15.0,
        ring_bytes: int = 8 << 20,
        total_bytes: int = 256 << 20,
        metrics: Metrics | None = None,
    ) -> None:
        self.db = db
        self.metrics = metrics
        self.url = database_url
        self.check_seconds = check_seconds  # quiet time after which the LISTEN connection pings
        self.heartbeat_seconds = heartbeat_seconds
        self.ring_bytes = ring_bytes       # FEED_RING_BYTES: one feed's ring, at most
        self.total_bytes = total_bytes     # FEED_TOTAL_BYTES: all rings of the process, at most
        self.ring_total = 0                # bytes the rings hold now
        self.feeds: dict[tuple[str, str], Feed] = {}
        self.watchers: dict[str, set[asyncio.Event]] = {}
        self.connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._closing = False
        self.shutting_down = False

    def start(self) -> None:
        """Listen in the background; the server does not wait for it (a
        server may start while the database is down)."""
        self._task = asyncio.create_task(self._listen())
        self._ticker = asyncio.create_task(self._tick())

    async def _tick(self) -> None:
        """Wake every follower twice per heartbeat period. A follower that
        finds it has been silent for a period sends a heartbeat; one timer
        for the process instead of one per waiting follower (a timer per wait
        costs CPU on every message and memory for every idle stream)."""
        while True:
            await asyncio.sleep(self.heartbeat_seconds / 2)
            for feed in self.feeds.values():
                feed.wake()

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
        for task in (self._task, self._ticker):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

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
                if self.metrics is not None:
                    self.metrics.listen_reconnects.inc()
                if was_connected:
                    # Followers check the database now: if it is gone, their
                    # streams end with UNAVAILABLE and a resume cursor.
                    self._wake_everything()
                log.warning("LISTEN connection lost (%s); reconnecting in %.1fs", error, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    def hold_total(self) -> None:
        """Hold the rings of all feeds to total_bytes: find the level L at
        which capping every ring at L bytes fits, and shrink the rings above
        it (the largest lose the most; small rings keep their entries)."""
        if self.ring_total <= self.total_bytes:
            return
        rings = sorted(self.feeds.values(), key=lambda feed: feed.bytes)
        below = 0  # bytes of the rings smaller than the level, kept whole
        for index, feed in enumerate(rings):
            level = (self.total_bytes - below) // (len(rings) - index)
            if feed.bytes > level:
                for larger in rings[index:]:
                    larger.shrink_to(level)
                return
            below += feed.bytes

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
                self.ring_total -= feed.bytes
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
