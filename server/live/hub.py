"""LISTEN/NOTIFY fan-out: one listening connection per process.

Build writes send `pg_notify('bp_build', ...)` inside their transaction
(server.store.builds: rare, and WatchBuild wants them). Appends commit with
no notification: the core tells the hub (`appended`), which wakes this
process's followers at once and has the process's coalescing notifier
(server.live.notifier) announce the builds that changed to every replica,
at most once per tick. A notification is only a hint that something
changed: feeds always read the rows themselves, so a lost notification (a
listener reconnect, a process killed between commit and notify) costs
latency, never data: the hub polls the positions of its followed builds
every `poll_seconds` (FEED_POLL_SECONDS), and after a reconnect every feed
and watcher re-reads.

The hub owns the process's feeds (server.live.feed), one per followed build
and kind, and their bound together (FEED_TOTAL_BYTES); readers get a
`Follower` (server.live.reader) from `Hub.follower` and never see a feed. A
follower that stops reading is held by HTTP/2 flow control: grpc.aio stops
resuming its handler once a few messages are queued for the connection
(measured in docs/streaming.md), so it holds at most those, never a queue of
its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import TYPE_CHECKING

import psycopg

from server.domain.status import TERMINAL, BuildStatus
from server.live.feed import Feed
from server.live.notifier import Notifier
from server.live.reader import Follower
from server.store import feeds
from server.store.builds import BUILD_CHANNEL
from server.store.db import Database, DatabaseRejected, DatabaseUnavailable, connect, ping
from server.store.feeds import Kind

if TYPE_CHECKING:
    from server.archive.objects import ObjectStore
    from server.telemetry.metrics import Metrics

log = logging.getLogger(__name__)


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
        archive: ObjectStore | None = None,
        notify_tick_seconds: float = 0.005,
        poll_seconds: float = 1.0,
    ) -> None:
        self.db = db
        self.archive = archive             # where archived builds' chunks are read (None: ARCHIVE_URL empty)
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
        self.notifier = Notifier(database_url, tick_seconds=notify_tick_seconds, timeout=db.timeout if db else 5.0)
        self.poll_seconds = poll_seconds  # FEED_POLL_SECONDS: followed builds' positions are read this often
        self._poller: asyncio.Task[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._closing = False
        self.shutting_down = False

    def start(self) -> None:
        """Listen in the background; the server does not wait for it (a
        server may start while the database is down)."""
        self._task = asyncio.create_task(self._listen())
        self._ticker = asyncio.create_task(self._tick())
        self._poller = asyncio.create_task(self._poll())
        self.notifier.start()

    def appended(self, kind: Kind, build_id: str, last: int) -> None:
        """An append of this process committed `build_id`'s `kind` up to
        `last`: wake its followers here now, and announce it to the other
        replicas with the next tick's notification."""
        feed = self.feeds.get((kind.name, build_id))
        if feed is not None:
            feed.announce(last)
        self.notifier.note(kind.channel, build_id, last)

    async def _poll(self) -> None:
        """The safety net of notifications: every poll_seconds, read the
        positions of the builds followed here (one query per 1,000) and
        announce them. A process killed between an append's commit and its
        notification delays the lines to other replicas' followers by at
        most this period."""
        while True:
            await asyncio.sleep(self.poll_seconds)
            ids = sorted({build_id for _, build_id in self.feeds})
            for start in range(0, len(ids), 1000):
                try:
                    found = await feeds.positions(self.db, ids[start:start + 1000])
                except (psycopg.Error, OSError, DatabaseUnavailable, DatabaseRejected) as error:
                    log.warning("polling followed builds failed: %s", error)
                    break
                for build_id, status, last_log, last_event in found:
                    for kind, last in ((feeds.LOGS, last_log), (feeds.EVENTS, last_event)):
                        feed = self.feeds.get((kind.name, build_id))
                        if feed is None:
                            continue
                        if status in TERMINAL and feed.final is None:
                            feed.finished(last)
                        elif feed.head is not None and last > feed.head:
                            feed.announce(last)

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
        await self.notifier.close()
        for task in (self._task, self._ticker, self._poller):
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
        # "<id> <seq> <id> <seq> ...": every build a notifier's tick changed.
        kind = feeds.LOGS if channel == feeds.LOGS.channel else feeds.EVENTS
        words = payload.split(" ")
        for index in range(0, len(words) - 1, 2):
            feed = self.feeds.get((kind.name, words[index]))
            if feed is not None:
                feed.announce(int(words[index + 1]))

    def _wake_everything(self) -> None:
        for events in self.watchers.values():
            for event in events:
                event.set()
        for feed in self.feeds.values():
            feed.refresh()
            feed.wake()

    @contextlib.asynccontextmanager
    async def follower(
        self,
        kind: Kind,
        build_id: str,
        *,
        after: int,
        follow: bool,
        since: datetime | None = None,
        tail: int = 0,
        values: Sequence[str] = (),
        until: float | None = None,
    ) -> AsyncIterator[Follower]:
        """A cursor over a build's feed of `kind`, from after `after` (then
        from `since`, then only the last `tail` matching entries), keeping the
        entries whose value is in `values` (all when empty); with `follow`,
        it waits for new entries until the build finishes, or until `until`
        (seconds since the epoch). See Follower.next_batch."""
        if not follow:
            yield await Follower.start(self, kind, build_id, None, None,
                                       after=after, since=since, tail=tail, values=values, until=until)
            return
        async with self._follow(kind, build_id) as (feed, event):
            # Registered before reading the position: nothing committed in
            # between can be missed.
            yield await Follower.start(self, kind, build_id, feed, event,
                                       after=after, since=since, tail=tail, values=values, until=until)

    @contextlib.asynccontextmanager
    async def _follow(self, kind: Kind, build_id: str) -> AsyncIterator[tuple[Feed, asyncio.Event]]:
        """Register a follower of a build's feed; yields the feed and the
        follower's wake-up event. Register BEFORE reading the backlog, so
        nothing committed in between is missed."""
        key = (kind.name, build_id)
        feed = self.feeds.get(key)
        if feed is None:
            feed = self.feeds[key] = Feed(self, kind, build_id)
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
                feed.stop()

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
